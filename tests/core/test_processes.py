"""chainette.processes: whether a process runs, as the plugins ask it of the servers and workers they started."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chainette import processes


def test_this_process_runs():
    assert processes.alive(os.getpid())


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="needs os.waitid to leave the child a zombie")
def test_a_child_runs_until_it_exits_and_counts_as_a_zombie_until_reaped():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert processes.alive(child.pid)
    child.stdin.close()  # type: ignore[union-attr]
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert processes.alive(child.pid)
    child.wait()
    assert not processes.alive(child.pid)


def test_another_users_process_counts(monkeypatch: pytest.MonkeyPatch):
    def refused(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refused)
    assert processes.alive(12345)
