"""When chains start and stop their vLLM servers (the fake executable on PATH): lazy, persistent, shared, failures, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, Step, register_engine
from chainette.errors import EngineError


class Text(BaseModel):
    text: str


def step(step_id: str, engine: str) -> Step:
    return Step(id=step_id, input_model=Text, output_model=Text, engine_name=engine, user_prompt="{{text}}")


ROWS = [{"text": "a"}, {"text": "b"}]


def test_lazy_engines_a_b_a_start_and_stop_around_their_steps(fake_vllm, tmp_path):
    register_engine("A", backend="vllm", model="model-a")
    register_engine("B", backend="vllm", model="model-b")
    chain = Chain(name="aba", steps=[step("one", "A"), step("two", "B"), step("three", "A")])
    result = chain.run(ROWS, output_dir=tmp_path / "run")

    assert len(result["three"]) == 2
    assert fake_vllm.timeline() == [
        ("start", "model-a"),
        ("term", "model-a"),
        ("start", "model-b"),
        ("term", "model-b"),
        ("start", "model-a"),
        ("term", "model-a"),
    ]
    assert fake_vllm.left() == []
    assert sorted(p.name for p in (tmp_path / "run" / "logs").iterdir()) == ["vllm-A.log", "vllm-B.log"]


def test_an_engine_named_like_a_model_path_is_refused_before_any_server_starts(fake_vllm, tmp_path):
    from chainette.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Engine name 'meta-llama/Llama-3.1-8B' cannot be used"):
        register_engine("meta-llama/Llama-3.1-8B", backend="vllm", model="meta-llama/Llama-3.1-8B")
    assert fake_vllm.timeline() == []


def test_steps_inside_branches_keep_their_server_running(fake_vllm, tmp_path):
    register_engine("A", backend="vllm", model="model-a")
    register_engine("B", backend="vllm", model="model-b")
    chain = Chain(
        name="branches",
        steps=[step("one", "A"), [Branch("left", [step("l", "B")]), Branch("right", [step("r", "A")])], step("last", "B")],
    )
    chain.run(ROWS, output_dir=tmp_path / "run")

    assert fake_vllm.timeline() == [("start", "model-a"), ("start", "model-b"), ("term", "model-a"), ("term", "model-b")]
    assert fake_vllm.left() == []


def test_persistent_engine_runs_for_the_whole_run(fake_vllm, tmp_path):
    register_engine("A", backend="vllm", model="model-a", lazy=False)
    register_engine("B", backend="vllm", model="model-b")
    Chain(name="persistent", steps=[step("one", "A"), step("two", "B"), step("three", "A")]).run(ROWS, output_dir=tmp_path / "run")

    assert fake_vllm.timeline() == [("start", "model-a"), ("start", "model-b"), ("term", "model-b"), ("term", "model-a")]
    assert fake_vllm.left() == []


def test_engines_with_the_same_model_and_options_share_one_server(fake_vllm, tmp_path):
    register_engine("A1", backend="vllm", model="shared", max_model_len=2048, max_concurrency=4)
    register_engine("A2", backend="vllm", model="shared", max_model_len=2048, chat_template_kwargs={"enable_thinking": False})
    register_engine("other", backend="vllm", model="shared", max_model_len=4096)
    chain = Chain(name="shared", steps=[step("one", "A1"), step("two", "A2"), step("three", "A1"), step("four", "other")])
    chain.run(ROWS, output_dir=tmp_path / "run")

    assert fake_vllm.timeline() == [("start", "shared"), ("term", "shared"), ("start", "shared"), ("term", "shared")]
    assert [s["argv"][-1] for s in fake_vllm.starts()] == ["2048", "4096"]
    assert fake_vllm.left() == []


def test_engine_failing_mid_run_stops_every_server(fake_vllm, tmp_path):
    register_engine("A", backend="vllm", model="model-a", lazy=False)
    register_engine("B", backend="vllm", model="model-b", extra_env={"FAKE_VLLM_API_KEY": "not-ours"})  # answers 401
    chain = Chain(name="failing", steps=[step("one", "A"), step("two", "B")])
    with pytest.raises(EngineError, match="HTTP 401"):
        chain.run(ROWS, output_dir=tmp_path / "run")

    timeline = fake_vllm.timeline()
    assert timeline[:2] == [("start", "model-a"), ("start", "model-b")]
    assert sorted(timeline[2:]) == [("term", "model-a"), ("term", "model-b")]
    assert fake_vllm.left() == []
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_server_exiting_mid_run_stops_the_run_with_its_status_and_log_then_the_run_resumes(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_EXIT_AFTER", "3")
    monkeypatch.setenv("FAKE_VLLM_LATENCY", "0.1")
    secret = "sk-mid-run-secret"
    register_engine("llm", backend="vllm", model="model-a", api_key=secret, max_concurrency=2, max_retries=50)
    chain = Chain(name="dying", steps=[step("one", "llm")])
    rows = [{"text": str(i)} for i in range(40)]
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        chain.run(rows, output_dir=tmp_path / "run")

    assert time.monotonic() - started < 30, "50 retries of a dead server would take minutes"
    message = str(info.value)
    assert info.value.kind == "server_exited"
    assert "Engine 'llm': its vLLM server (pid " in message and ") exited with status 7 during the run" in message
    assert "ERROR EngineCore died unexpectedly (fake); VLLM_API_KEY=**********" in message
    assert secret not in message
    assert "run the same command again to resume" in message
    assert fake_vllm.left() == [], "the child it left behind is stopped with its group"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"

    monkeypatch.delenv("FAKE_VLLM_EXIT_AFTER")
    result = chain.run(rows, output_dir=tmp_path / "run")
    assert sorted(int(row["row_id"]) for row in result.records("one")) == list(range(40))
    assert result.errors == []
    assert [event for event, _ in fake_vllm.timeline()] == ["start", "start", "term"]


def test_server_crashing_at_start_mid_run_stops_the_others(fake_vllm, tmp_path):
    register_engine("A", backend="vllm", model="model-a", lazy=False)
    register_engine("B", backend="vllm", model="model-b", extra_env={"FAKE_VLLM_MODE": "crash"})
    chain = Chain(name="crashing", steps=[step("one", "A"), step("two", "B")])
    with pytest.raises(EngineError, match="exited with status 3"):
        chain.run(ROWS, output_dir=tmp_path / "run")

    assert fake_vllm.timeline() == [("start", "model-a"), ("start", "model-b"), ("term", "model-a")]
    assert fake_vllm.left() == []


CHAIN_FILE = """
from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

register_engine("A", backend="vllm", model="model-a", max_concurrency=1)
chain = Chain(name="slow", steps=[Step(id="s", input_model=Text, output_model=Text, engine_name="A", user_prompt="{{text}}")])
"""


def start_chainette_run(tmp_path) -> subprocess.Popen[str]:
    """`chainette run` of tmp_path/chain.py over tmp_path/in.jsonl into tmp_path/out, as a subprocess."""
    command = [
        sys.executable,
        "-m",
        "chainette",
        "run",
        f"{tmp_path}/chain.py:chain",
        "-i",
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out"),
    ]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_chainette_run_stops_the_server(fake_vllm, tmp_path, monkeypatch, signum, status):
    monkeypatch.setenv("FAKE_VLLM_LATENCY", "0.1")
    (tmp_path / "chain.py").write_text(CHAIN_FILE)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(200)))
    run = start_chainette_run(tmp_path)
    try:
        fake_vllm.wait_for("ready")
        time.sleep(0.5)  # requests in flight
        assert run.poll() is None
        run.send_signal(signum)
        output, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == status, output
    assert fake_vllm.timeline() == [("start", "model-a"), ("term", "model-a")]
    assert fake_vllm.left() == []
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize(("mode", "on_sigterm"), [("ok", "term"), ("deaf_loading", "term_ignored")])
def test_ctrl_c_while_the_server_loads_stops_it_within_seconds(fake_vllm, tmp_path, monkeypatch, mode, on_sigterm):
    """A loading vLLM may ignore SIGTERM (deaf_loading): it gets a short grace, not the 30 s of a healthy server."""
    monkeypatch.setenv("FAKE_VLLM_DELAY", "120")
    monkeypatch.setenv("FAKE_VLLM_MODE", mode)
    (tmp_path / "chain.py").write_text(CHAIN_FILE)
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    run = start_chainette_run(tmp_path)
    try:
        fake_vllm.wait_for("start")
        run.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert time.monotonic() - signalled < 20, "a loading server is killed after a few seconds"
    assert run.returncode == 130, output
    assert "Interrupted (Ctrl-C)" in output and "Traceback" not in output
    assert [e["event"] for e in fake_vllm.events()] == ["start", on_sigterm]
    assert fake_vllm.left() == []
