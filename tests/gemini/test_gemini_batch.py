"""Batch mode on the gemini backend, against the stand-in's batch, upload and download endpoints: inline batches, the
Files API above the inline limit, line errors, re-attaching from the ids the journal keeps, cancel, and kill -9."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from chainette import Chain, EngineError, Step, register_engine
from chainette.client import Answer

genai_types = pytest.importorskip("google.genai.types")
import chainette_gemini.batch as batch_module  # noqa: E402
from chainette_gemini.batch import GeminiBatchClient  # noqa: E402

from ..batch_chain import Label, Text, chain, echo, fast, labels, rows  # noqa: E402, F401 (fast: an autouse fixture)

KEY = "gm-batch-key-0123456789"


@pytest.fixture
def server(gemini_server):
    gemini_server.respond = echo
    return gemini_server


def engine(server, **options):
    options = {"batch": True, "batch_poll_seconds": 0.01, **options}
    return register_engine("llm", backend="gemini", model="fake-model", endpoint=server.base_url, api_key=KEY, **options)


def test_a_chain_answered_through_inline_batches_keeps_every_row_aligned(server, tmp_path):
    engine(server)
    result = chain().run(rows(12), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(12)}
    assert server.chat_requests() == [], "no online request"
    assert len(server.created) == 2 and server.uploads == {}, "one inline batch per step, nothing uploaded"
    first = server.jobs[server.created[0]]["input"]["requests"]["requests"][0]
    assert first["metadata"] == {"key": "q-0-0"}
    generation = genai_types.GenerationConfig.model_validate(first["request"]["generationConfig"])
    assert generation.response_json_schema["properties"].keys() == {"label"}
    assert result.stats["steps"]["label"]["input_tokens"] == 12 * 11


def test_a_batch_above_the_inline_limit_goes_through_the_files_api(server, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "INLINE_BYTES", 0)
    engine(server)
    result = chain().run(rows(5), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(5)}
    source = server.jobs[server.created[0]]["input"]
    assert source == {"fileName": "files/upload-1"}
    line = json.loads(server.files["files/upload-1"].decode().splitlines()[0])
    assert line["key"] == "q-0-0" and genai_types.Content.model_validate(line["request"]["contents"][0]).parts[0].text == "<<row0>>"
    assert not list((tmp_path / "out").rglob("*.upload.jsonl")), "the converted file is removed once uploaded"


@pytest.mark.parametrize("inline", [True, False])
def test_a_create_whose_answer_was_lost_is_found_not_made_twice(server, tmp_path, monkeypatch, inline):
    """The server made the job but answered a 504: the retry finds that job by its display name instead of running the
    file twice, inline or uploaded; and a run stopped there takes that job up on resume."""
    if not inline:
        monkeypatch.setattr(batch_module, "INLINE_BYTES", 10)
    engine(server)
    server.lost_creates = 1
    result = chain().run(rows(6), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(6)}
    assert len(server.created) == 2, "one job per step, none made twice"
    engine(server, max_retries=0)
    server.lost_creates = 1
    with pytest.raises(EngineError):
        chain().run(rows(6), output_dir=tmp_path / "again", cache=False)
    engine(server)
    result = chain().run(rows(6), output_dir=tmp_path / "again", cache=False)
    assert labels(result) == {str(i): f"row{i}" for i in range(6)}
    assert len(server.created) == 4, "the resumed run took up the job its lost create made"


def test_lines_that_fail_transiently_are_asked_again_and_others_fail_their_rows(server, tmp_path):
    engine(server)
    server.line_error = {"q-0-1": {"code": 14, "message": "unavailable"}, "q-0-2": {"code": 3, "message": "bad request"}}
    result = chain().run(rows(4), output_dir=tmp_path / "out")
    assert set(labels(result, "label")) == {"0", "1", "3"}
    [error] = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["row_id"] == "2" and error["error_type"] == "batch_3"


def test_a_failed_batch_fails_its_rows_and_an_expired_one_is_asked_again(server, tmp_path):
    engine(server)
    first = Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")
    server.outcomes = ["BATCH_STATE_FAILED"]  # google-genai 3.6 drops a Developer API batch's error: no reason to quote
    Chain(name="one", steps=[first]).run(rows(2), output_dir=tmp_path / "failed")
    errors = [json.loads(line) for line in (tmp_path / "failed" / "errors.jsonl").read_text().splitlines()]
    assert [error["error_type"] for error in errors] == ["batch_failed"] * 2 and "the batch failed" in errors[0]["message"]

    server.outcomes = ["BATCH_STATE_EXPIRED"]
    result = Chain(name="one", steps=[first]).run(rows(2), output_dir=tmp_path / "expired")
    assert labels(result, "label") == {"0": "row0", "1": "row1"}
    assert len(server.created) == 3, "the expired batch's rows were asked again in a new batch"


def test_a_fresh_client_re_attaches_by_the_journaled_ids_and_cancels(server, tmp_path):
    """What a rerun after kill -9 does: a new client creates the batch from the journaled upload id alone, and reads a
    batch's state and answers from its id alone."""
    config = engine(server)
    from chainette.client import Request
    from chainette.schema import json_schema

    request = Request([{"role": "user", "content": "<<again>>"}], json_schema(Label), "Label", {}, "s", "0", Label)
    path = tmp_path / "000-00000.jsonl"

    async def scenario() -> tuple[str, list[tuple[str, object]], str]:
        first = GeminiBatchClient(config)
        path.write_text(json.dumps(first.line("q-0-0", request)) + "\n")
        upload_id = await first.upload(path)
        await first.aclose()  # the kill
        second = GeminiBatchClient(config)
        batch_id = await second.create(upload_id)
        status = await second.status(batch_id)
        answers = await second.results(status)
        server.hold = True
        held = await second.create(upload_id)
        assert not (await second.status(held)).finished
        await second.cancel(held)
        final = (await second.status(held)).state
        await second.aclose()
        return batch_id, answers, final

    batch_id, answers, final = asyncio.run(scenario())
    [(key, answer)] = answers
    assert key == "q-0-0" and isinstance(answer, Answer) and json.loads(answer.text) == {"label": "again"}
    assert batch_id == server.created[0] and final == "cancelled" and server.cancelled == [server.created[1]]


CHAIN = """
import os
from pydantic import BaseModel
from chainette import Chain, EngineError, Step, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="gemini", model="fake-model", endpoint=os.environ["FAKE_URL"], api_key="k-batch",
                batch=True, batch_poll_seconds=0.05)
chain = Chain(name="batched", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")])
"""


def test_kill_9_while_a_batch_runs_and_the_rerun_re_attaches_to_it(server, tmp_path):
    server.hold = True
    (tmp_path / "chain.py").write_text(textwrap.dedent(CHAIN))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"row{i}"}) + "\n" for i in range(6)))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "chainette", "run", f"{tmp_path / 'chain.py'}:chain", "-i", str(tmp_path / "in.jsonl"), "-o", str(out)]
    env = {**os.environ, "FAKE_URL": server.base_url, "CHAINETTE_LOAD_PLUGINS": "gemini"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / ".chainette" / "batches" / "label" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and '"batch_id"' in journal.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, "the run did not submit its batch"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert len(server.created) == 1

    server.hold = False
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(server.created) == 1, "the rerun re-attached to the batch instead of submitting it again"
    outputs = [json.loads(line) for path in sorted((out / "label").glob("*.jsonl")) for line in path.read_text().splitlines()]
    assert {line["row_id"]: line["label"] for line in outputs} == {str(i): f"row{i}" for i in range(6)}
    assert not Path(out).joinpath("errors.jsonl").exists() or not (out / "errors.jsonl").read_text()


@pytest.mark.parametrize(("newer", "found"), [(0, True), (3, True), (5, True), (6, False)])
def test_a_job_is_found_by_its_file_within_the_pages_listed(server, tmp_path, monkeypatch, newer, found):
    """`batch_of` looks through the first LISTED_PAGES pages of jobs, newest first: a job with `newer` jobs made after it
    is found while it is on one of them (pages of two, three pages here), and not past them."""
    monkeypatch.setattr(batch_module, "PAGE_SIZE", 2)
    monkeypatch.setattr(batch_module, "LISTED_PAGES", 3)
    from chainette.client import Request
    from chainette.schema import json_schema

    request = Request([{"role": "user", "content": "<<again>>"}], json_schema(Label), "Label", {}, "s", "0", Label)
    path = tmp_path / "000-00000.jsonl"

    async def scenario() -> tuple[str, str | None]:
        client = GeminiBatchClient(engine(server))
        path.write_text(json.dumps(client.line("q-0-0", request)) + "\n")
        upload_id = await client.upload(path)
        made = await client.create(upload_id)
        for number in range(newer):
            name = f"batches/other-{number}"
            server.jobs[name] = {"state": "BATCH_STATE_PENDING", "display_name": f"someone else's {number}"}
            server.created.append(name)
        looked_up = await client.batch_of(upload_id)
        await client.aclose()
        return made, looked_up

    made, looked_up = asyncio.run(scenario())
    assert looked_up == (made if found else None)
