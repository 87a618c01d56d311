"""Batch mode on the vllm backend: `vllm run-batch` processes (the fake executable on PATH) answer a step, fail it
with their log's last lines, and are stopped on a stop; an engine with an endpoint cannot batch."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal

from pydantic import BaseModel
import pytest

from chainette import Chain, Step, register_engine
from chainette.errors import ConfigError, EngineError, RunInterrupted
from chainette.events import BatchChanged


class Text(BaseModel):
    text: str


def chain() -> Chain:
    return Chain(name="b", steps=[Step(id="label", input_model=Text, output_model=Text, engine_name="llm", user_prompt="{{text}}")])


ROWS = [{"text": f"row{i}"} for i in range(5)]


def engine(**options) -> None:
    register_engine("llm", backend="vllm", model="tiny", batch=True, batch_poll_seconds=0.05, max_model_len=256, **options)


def test_a_step_answered_by_vllm_run_batch(fake_vllm, tmp_path):
    engine()
    result = chain().run(ROWS, output_dir=tmp_path / "out")
    assert len(result["label"]) == 5
    [start] = fake_vllm.starts()
    argv = start["argv"]
    assert argv[0] == "run-batch" and argv[argv.index("--model") + 1] == "tiny" and "--max-model-len" in argv
    batch_file = argv[argv.index("-i") + 1]
    first = json.loads(Path(batch_file).read_text().splitlines()[0])
    assert first["url"] == "/v1/chat/completions" and first["body"]["model"] == "tiny" and first["custom_id"] == "q-0-0"
    assert not any(e["argv"][0] == "serve" for e in fake_vllm.starts()), "no server for a batch engine"
    assert (tmp_path / "out" / "logs" / "vllm-llm.log").exists()


def test_a_failing_run_batch_fails_its_rows_with_its_log_and_stops_the_step(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    engine()
    with pytest.raises(EngineError, match=r"(?s)its first 5 rows all failed the same way.*CUDA out of memory \(fake run-batch\)"):
        chain().run(ROWS, output_dir=tmp_path / "out")
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 5 and {e["error_type"] for e in errors} == {"batch_failed"}
    assert "exited with status 3" in errors[0]["message"]


def test_a_stop_stops_the_run_batch_process(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "never_healthy")
    engine()

    def interrupt(event) -> None:
        if isinstance(event, BatchChanged) and event.state == "in_progress":
            fake_vllm.wait_for("start")
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted):
        chain().run(ROWS, output_dir=tmp_path / "out", reporter=interrupt)
    assert fake_vllm.starts() and not fake_vllm.left(), "the run-batch process is stopped with the run"


def test_an_engine_with_an_endpoint_cannot_batch(tmp_path):
    register_engine("llm", backend="vllm", model="tiny", endpoint="http://127.0.0.1:9/v1", batch=True)
    with pytest.raises(ConfigError, match="runs `vllm run-batch` on this machine, so the engine must not have an endpoint"):
        chain().run(ROWS, output_dir=tmp_path / "out")


async def test_after_a_restart_a_gone_job_is_completed_if_it_wrote_its_answers_else_expired(tmp_path):
    from chainette.engines import get_engine
    from chainette_vllm.run_batch import RunBatchClient

    engine()
    client = RunBatchClient(get_engine("llm"), tmp_path)
    written = tmp_path / "000.answers.jsonl"
    answer = {"custom_id": "q-0-0", "response": {"status_code": 200, "body": {"choices": [{"message": {"content": "{}"}}]}}}
    written.write_text(json.dumps(answer) + "\n" + '{"custom_id": "q-0-1", "resp')
    gone = 2**22 + 7  # no such process
    status = await client.status(f"{gone}|boot:1|{written}")
    assert status.state == "completed" and status.result_files == (str(written),)
    assert [key for key, _ in await client.results(status)] == ["q-0-0"], "the line cut by the kill is asked again"
    assert (await client.status(f"{gone}|boot:1|{tmp_path / 'missing.jsonl'}")).state == "expired"
