"""Servers whose chainette was killed (`kill -9`): they die with it (Linux), and a survivor recorded in the owned-servers
file is adopted or killed by the next start, never doubled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from chainette import register_engine
from chainette_vllm import server
from chainette_vllm.owned import OWNED_FILE
from chainette_vllm.process import free_port, identity, process_running
from chainette_vllm.spec import serve_spec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals and process identities need Linux")

OWNER = """
import sys, time
from pathlib import Path
from chainette import register_engine
from chainette_vllm import server

print(server.ensure_running(register_engine("orphaned", backend="vllm", model="m"), Path(sys.argv[1])), flush=True)
time.sleep(600)
"""


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still false after {timeout} s"
        time.sleep(0.05)


def test_server_dies_with_its_owner_killed_by_sigkill(fake_vllm, tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("http://127.0.0.1:")
        assert len(fake_vllm.left()) == 2  # the server and its child
        owner.kill()
        owner.wait()
        wait_until(lambda: fake_vllm.left() == [])
    finally:
        owner.kill()
        owner.wait()
    assert [e["event"] for e in fake_vllm.events()] == ["start", "ready", "term"]


@pytest.fixture
def dead_owner() -> dict[str, Any]:
    """The pid and identity of a process that has ended, as an owner killed with -9 leaves them."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    recorded = {"owner": owner.pid, "owner_id": identity(owner.pid)}
    owner.kill()
    owner.wait()
    return recorded


@pytest.fixture
def leave_survivor(fake_vllm, tmp_path) -> Iterator[Callable[..., dict[str, Any]]]:
    """`leave(owner, mode)` starts a fake `vllm serve m` as `owner` would have, records it as that owner's and returns its entry."""
    processes: list[subprocess.Popen[bytes]] = []

    def leave(owner: dict[str, Any], mode: str = "ok") -> dict[str, Any]:
        port = free_port()
        log = tmp_path / "survivor.log"
        command = [str(tmp_path / "bin" / "vllm"), "serve", "m", "--host", "127.0.0.1", "--port", str(port)]
        with open(log, "ab") as out:
            env = {**os.environ, "FAKE_VLLM_MODE": mode}
            processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env))
        fake_vllm.wait_for("ready" if mode == "ok" else "start")
        pid = processes[-1].pid
        entry = {
            "key": serve_spec(register_engine("survivor", backend="vllm", model="m")).key,
            "engine": "survivor",
            "url": f"http://127.0.0.1:{port}/v1",
            "pid": pid,
            "server_id": identity(pid),
            **owner,
            "started_at": "2026-01-01T00:00:00+00:00",
            "log": str(log),
            "command": " ".join(command),
        }
        owned_file(fake_vllm).write_text(json.dumps([entry]))
        return entry

    yield leave
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed = {process.pid for process in processes}
    group = [pid for start in fake_vllm.starts() if start["pid"] in killed for pid in (start["pid"], start["child"])]
    deadline = time.monotonic() + 10
    while any(map(process_running, group)) and time.monotonic() < deadline:  # a killed child exits in its own time
        time.sleep(0.05)


def owned_file(fake_vllm) -> Path:
    fake_vllm.state.mkdir(parents=True, exist_ok=True)
    return fake_vllm.state / OWNED_FILE


def test_a_healthy_survivor_of_a_dead_owner_is_adopted(fake_vllm, tmp_path, dead_owner, leave_survivor):
    survivor = leave_survivor(dead_owner)
    config = register_engine("llm", backend="vllm", model="m")
    assert server.ensure_running(config, tmp_path / "run") == survivor["url"]

    assert len(fake_vllm.starts()) == 1, "no second server"
    [entry] = json.loads(owned_file(fake_vllm).read_text())
    assert (entry["pid"], entry["owner"], entry["owner_id"]) == (survivor["pid"], os.getpid(), identity(os.getpid()))
    server.release(config)  # now ours: stopped
    assert fake_vllm.left() == []
    assert json.loads(owned_file(fake_vllm).read_text()) == []


def test_an_unhealthy_survivor_of_a_dead_owner_is_killed_before_a_new_server_starts(fake_vllm, tmp_path, dead_owner, leave_survivor):
    survivor = leave_survivor(dead_owner, mode="never_healthy")
    config = register_engine("llm", backend="vllm", model="m")
    url = server.ensure_running(config, tmp_path / "run")

    assert url != survivor["url"]
    first, second = fake_vllm.starts()
    assert [(e["event"], e["pid"]) for e in fake_vllm.events()][:3] == [
        ("start", first["pid"]),
        ("term", first["pid"]),
        ("start", second["pid"]),
    ]
    assert fake_vllm.left() == [second["pid"], second["child"]]
    [entry] = json.loads(owned_file(fake_vllm).read_text())
    assert (entry["pid"], entry["owner"]) == (second["pid"], os.getpid())
    server.release(config)
    assert fake_vllm.left() == []


def test_a_server_whose_owner_lives_is_left_alone(fake_vllm, tmp_path, leave_survivor):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        survivor = leave_survivor({"owner": owner.pid, "owner_id": identity(owner.pid)})
        config = register_engine("llm", backend="vllm", model="m")
        assert server.ensure_running(config, tmp_path / "run") != survivor["url"]
        server.release(config)
        assert fake_vllm.left() == [survivor["pid"], fake_vllm.starts()[0]["child"]], "another chainette's server runs on"
        assert json.loads(owned_file(fake_vllm).read_text()) == [survivor]
    finally:
        owner.kill()
        owner.wait()


def test_a_recorded_pid_now_naming_another_process_is_never_signalled(fake_vllm, tmp_path, dead_owner):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        entry = {
            "key": serve_spec(register_engine("llm", backend="vllm", model="m")).key,
            "pid": stranger.pid,
            "server_id": "another-process",
        }
        owned_file(fake_vllm).write_text(json.dumps([{**entry, **dead_owner, "url": "http://127.0.0.1:9/v1"}]))
        config = register_engine("llm", backend="vllm", model="m")
        server.ensure_running(config, tmp_path / "run")

        assert stranger.poll() is None
        assert [e["pid"] for e in json.loads(owned_file(fake_vllm).read_text())] == [fake_vllm.starts()[0]["pid"]]
        server.release(config)
    finally:
        stranger.kill()
        stranger.wait()
