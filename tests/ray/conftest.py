"""Helpers for the Ray runner's tests: a local two-CPU Ray cluster per module, the processes a test started (found by
a marker in their environment), and `chainette run` subprocesses over the kill tests' torture chain."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import socket
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

MARKER = "CHAINETTE_RAY_TEST"
RAY = Path(sys.executable).with_name("ray")


def environment(marker: str, **more: str) -> dict[str, str]:
    """The environment of a run subprocess: every plugin loaded (the runner is one), `marker` on every process it starts."""
    env = {key: value for key, value in os.environ.items() if key not in ("CHAINETTE_LOAD_PLUGINS", "RAY_ADDRESS")}
    return {**env, MARKER: marker, "COLUMNS": "200", "RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled", **more}


def marked(marker: str) -> list[psutil.Process]:
    """The live processes whose environment carries `marker` (those a test's cluster or run started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_gone(marker: str, seconds: float = 30.0) -> list[psutil.Process]:
    """The processes carrying `marker` still alive after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while (left := marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def block_workers(marker: str) -> list[psutil.Process]:
    """The Ray worker processes that run blocks (the block workers, Ray actors)."""
    busy = []
    for process in marked(marker):
        try:
            if "ray::BlockWorker" in " ".join(process.cmdline()):
                busy.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return busy


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-CPU Ray cluster for the module (its address, the marker of its processes, and its client's ray:// address);
    stopped and checked gone at the end."""
    marker = uuid.uuid4().hex
    port, client_port = _free_port(), _free_port()
    env = environment(marker, CHAINETTE_CACHE_DIR=str(tmp_path_factory.mktemp("worker-cache")))
    args = [
        str(RAY),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--ray-client-server-port={client_port}",
    ]
    args += ["--num-cpus=2"]
    args += ["--include-dashboard=false", "--disable-usage-stats"]
    head = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(RAY), "status", f"--address={address}"], env=env, capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "the test cluster did not start"
            time.sleep(0.5)
        while not _listening(client_port):  # the client server starts after the cluster answers `ray status`
            assert head.poll() is None and time.monotonic() < deadline, "the test cluster's client server did not start"
            time.sleep(0.2)
        yield address, marker, f"ray://127.0.0.1:{client_port}"
    finally:
        head.terminate()
        head.wait(timeout=60)
    left = wait_gone(marker)
    for process in left:
        process.kill()
    assert not left, f"the test cluster left processes behind: {left}"
