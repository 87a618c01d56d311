"""The fake `vllm` executable (tests/vllm/fake_vllm.py) first on PATH, and what it recorded."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import json
import os
from pathlib import Path
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import pytest

from chainette_vllm import process, server

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


@dataclass
class FakeVllm:
    """What the fake executable recorded, and helpers to check that none of its processes is left."""

    record: Path
    state: Path

    def events(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def starts(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "start"]

    def timeline(self) -> list[tuple[str, str]]:
        """(event, model) for every start and stop, in order."""
        models = {e["pid"]: e["argv"][1] for e in self.starts()}
        return [(e["event"], models[e["pid"]]) for e in self.events() if e["event"] in ("start", "term")]

    def pids(self) -> list[int]:
        """Every process the fake started: the servers and their children."""
        return [pid for e in self.starts() for pid in (e["pid"], e["child"])]

    def left(self) -> list[int]:
        return [pid for pid in self.pids() if process.process_running(pid)]

    def wait_for(self, event: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(e["event"] == event for e in self.events()) < count:
            assert time.monotonic() < deadline, f"no {event!r} event after {timeout} s: {self.events()}"
            time.sleep(0.05)


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """Put a `vllm` shim running fake_vllm.py first on PATH; state in tmp, and the temporary folder (the servers' IPC
    folders) a new one; kill whatever it left at teardown."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vllm"
    shim.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE_VLLM)!r}, run_name='__main__')\n")
    shim.chmod(0o755)
    fake = FakeVllm(record=tmp_path / "fake-vllm.jsonl", state=tmp_path / "state")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(fake.record))
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.1")
    monkeypatch.setenv("CHAINETTE_STATE_DIR", str(fake.state))
    short = tempfile.mkdtemp(prefix="chainette-test-")  # not in tmp_path: the servers' sockets need a short path
    monkeypatch.setattr(tempfile, "tempdir", short)
    for name in ("VLLM_API_KEY", "FAKE_VLLM_MODE", "FAKE_VLLM_LATENCY", "FAKE_VLLM_API_KEY", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(process, "STOP_GRACE", 1.0)
    yield fake
    server._stop_owned_servers()
    left = fake.left()
    for pid in left:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
    shutil.rmtree(short, ignore_errors=True)
    assert not left, f"fake vllm processes left running: {left}"
