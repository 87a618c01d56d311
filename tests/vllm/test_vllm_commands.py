"""`chainette warmup`, `run`, `ps` and `kill` with the fake `vllm` executable: warm servers are reused, then stopped."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import json
import subprocess
import sys

import pytest

from chainette import register_engine
from chainette.cli import main
from chainette_vllm.warm import list_warm, stop_warm, warm_up

CHAIN_FILE = """
from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

register_engine("A", backend="vllm", model="model-a", lazy=False)
register_engine("B", backend="vllm", model="model-b")
steps = [Step(id=f"s{i}", input_model=Text, output_model=Text, engine_name=engine, user_prompt="{{text}}") for i, engine in enumerate("AB")]
chain = Chain(name="warm", steps=steps)
"""

ENGINES_FILE = """
engines:
  - {name: persistent, backend: vllm, model: model-p, lazy: false}
  - {name: lazy, backend: vllm, model: model-l}
  - {name: offline, backend: fake, model: m, lazy: false}
  - {name: remote, backend: vllm, model: m, endpoint: "http://127.0.0.1:9/v1"}
"""


def chainette(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chainette", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_warmup_then_run_reuses_the_server_and_kill_stops_it(fake_vllm, tmp_path):
    (tmp_path / "chain.py").write_text(CHAIN_FILE)
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    chain = f"{tmp_path}/chain.py:chain"

    warmup = chainette("warmup", chain)
    assert warmup.returncode == 0, warmup.stderr
    [start] = fake_vllm.starts()
    port = start["argv"][5]
    assert warmup.stdout == f"A  http://127.0.0.1:{port}/v1\n"
    [entry] = json.loads((fake_vllm.state / "vllm-servers.json").read_text())
    assert (entry["engine"], entry["model"], entry["pid"]) == ("A", "model-a", start["pid"])
    assert entry["command"].endswith(f"vllm serve model-a --host 127.0.0.1 --port {port}")
    assert (fake_vllm.state / "logs" / "vllm-A.log").exists()

    ps = chainette("ps")
    assert ps.returncode == 0
    assert all(part in ps.stdout for part in ("A", "model-a", f"http://127.0.0.1:{port}/v1", str(start["pid"])))

    assert main(["run", chain, "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")]) == 0
    assert fake_vllm.timeline() == [("start", "model-a"), ("start", "model-b"), ("term", "model-b")]  # A: no second spawn, kept
    assert fake_vllm.left() == [start["pid"], start["child"]]

    kill = chainette("kill", "A")
    assert kill.returncode == 0, kill.stderr
    assert kill.stdout == f"Stopped A (pid {start['pid']}, http://127.0.0.1:{port}/v1)\n"
    assert fake_vllm.left() == []
    assert json.loads((fake_vllm.state / "vllm-servers.json").read_text()) == []
    assert chainette("ps").stdout == "No vLLM server started by warmup is running.\n"


def test_warm_server_uptime_counts_from_its_start_not_its_health(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "4")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    warm_up(register_engine("slow", backend="vllm", model="m"))
    [entry] = list_warm()
    assert datetime.fromisoformat(entry["started_at"]) < before + timedelta(seconds=2), "it became healthy 4 s after its start"
    stop_warm(None)
    assert fake_vllm.left() == []


def test_warmup_from_engines_yaml_starts_persistent_vllm_engines(fake_vllm, tmp_path, capsys):
    engines = tmp_path / "engines.yaml"
    engines.write_text(ENGINES_FILE)
    assert main(["warmup", str(engines)]) == 0
    out, err = capsys.readouterr()
    assert [s["argv"][1] for s in fake_vllm.starts()] == ["model-p"]
    assert out.startswith("persistent  http://127.0.0.1:")
    assert "offline: skipped (backend fake, not vllm)" in err

    assert main(["warmup", str(engines), "--engine", "lazy", "--engine", "remote", "--engine", "persistent"]) == 0
    out, err = capsys.readouterr()
    assert [s["argv"][1] for s in fake_vllm.starts()] == ["model-p", "model-l"]  # persistent was already warm
    assert [line.split()[0] for line in out.splitlines()] == ["lazy", "persistent"]
    assert "remote: skipped (it uses its endpoint http://127.0.0.1:9/v1)" in err

    assert main(["kill", "--all"]) == 0
    assert sorted(capsys.readouterr().out.splitlines())[0].startswith("Stopped lazy (pid ")
    assert fake_vllm.left() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["warmup", "ENGINES", "--engine", "nope"], "has no engine named nope (its engines: lazy, offline, persistent, remote)"),
        (["kill"], "Name the engines whose servers to stop, or pass --all"),
        (["kill", "ghost"], "No server started by warmup for ghost (warm engines: none)"),
    ],
)
def test_command_errors(fake_vllm, tmp_path, capsys, args, message):
    engines = tmp_path / "engines.yaml"
    engines.write_text(ENGINES_FILE)
    assert main([str(engines) if a == "ENGINES" else a for a in args]) == 1
    assert message in " ".join(capsys.readouterr().err.split())
    assert fake_vllm.starts() == []


def test_warmup_needs_persistent_engines_or_names(fake_vllm, tmp_path, capsys):
    engines = tmp_path / "engines.yaml"
    engines.write_text("engines:\n  - {name: lazy, backend: vllm, model: m}\n")
    assert main(["warmup", str(engines)]) == 1
    assert "has lazy=False (lazy); name those to start with --engine NAME" in " ".join(capsys.readouterr().err.split())


def test_a_recorded_pid_now_held_by_another_process_is_never_stopped(fake_vllm):
    """The system may give a dead warm server's pid to another process: `ps` forgets the entry, `kill` does not kill it."""
    from chainette_vllm.state import locked_state
    from chainette_vllm.warm import STATE_FILE

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        with locked_state(STATE_FILE) as entries:
            entries.append(
                {
                    "engine": "old",
                    "model": "m",
                    "key": "k",
                    "url": "http://127.0.0.1:9/v1",
                    "pid": stranger.pid,
                    "server_id": "another-boot:1",
                    "started_at": "2026-01-01T00:00:00+00:00",
                    "log": "/dev/null",
                    "command": "vllm serve m",
                }
            )
        assert stop_warm(["old"])[0]["pid"] == stranger.pid, "the entry is forgotten"
        assert stranger.poll() is None, "the process that now has the pid is left alone"
        with locked_state(STATE_FILE) as entries:
            entries.append(
                {
                    "engine": "old",
                    "model": "m",
                    "key": "k",
                    "url": "",
                    "pid": stranger.pid,
                    "server_id": "another-boot:1",
                    "started_at": "",
                    "log": "",
                    "command": "",
                }
            )
        assert list_warm() == []
    finally:
        stranger.kill()
        stranger.wait()


def test_a_warmup_killed_while_the_model_loads_leaves_a_server_that_ps_lists_and_kill_stops(fake_vllm, tmp_path, monkeypatch):
    import signal
    import time

    monkeypatch.setenv("FAKE_VLLM_DELAY", "30")
    (tmp_path / "chain.py").write_text(CHAIN_FILE)
    warmup = subprocess.Popen(
        [sys.executable, "-m", "chainette", "warmup", f"{tmp_path}/chain.py:chain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    fake_vllm.wait_for("start")
    deadline = time.monotonic() + 10
    while not list_warm():
        assert time.monotonic() < deadline, "the loading server was never recorded"
        time.sleep(0.05)
    warmup.send_signal(signal.SIGKILL)
    warmup.communicate()
    [start] = fake_vllm.starts()
    assert [entry["pid"] for entry in list_warm()] == [start["pid"]], "the loading server is listed"
    assert [entry["pid"] for entry in stop_warm(["A"])] == [start["pid"]]
    assert fake_vllm.left() == []


def test_a_warmup_that_fails_forgets_its_server(fake_vllm, monkeypatch):
    from chainette.errors import EngineError

    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    with pytest.raises(EngineError):
        warm_up(register_engine("broken", backend="vllm", model="m"))
    assert list_warm() == [] and fake_vllm.left() == []
