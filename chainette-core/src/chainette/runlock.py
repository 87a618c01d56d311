"""The lock that gives a run directory one owner at a time.

A run (and a push, or the cancelling of a run's batch jobs) holds an exclusive `flock` on `lock` in the run's
state folder for as long as it works in the directory, and writes its pid, host, start time and command in it,
so that a second one is refused at once naming the holder. The kernel drops the lock when the holder's process
ends, however it ends (kill -9 included): a lock is never stale. On a network file system the lock is only as
good as the file system's own: NFSv4 (or NFSv3 with lockd) shares it across machines, a mount with `nolock` keeps
it local to each machine; a file system that refuses the lock call makes the run refuse to start.
"""

from __future__ import annotations

from dataclasses import dataclass
import errno
import json
import os
from pathlib import Path
import socket
import sys
import time

from chainette.errors import ChainetteError

if sys.platform != "win32":
    import fcntl

LOCK_FILE = "lock"
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN)


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory's lock, as the holder wrote it down (pid 0: it has not yet)."""

    pid: int
    host: str
    since: float
    command: str

    def describe(self) -> str:
        """`a chainette run (pid 12 on host h, since 2026-01-02 03:04:05 UTC)`."""
        if not self.pid:
            return self.command
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.since))
        return f"{self.command} (pid {self.pid} on host {self.host}, since {started})"

    def how_to_stop(self) -> str:
        return f" (on host {self.host}: kill {self.pid})" if self.pid else ""


UNRECORDED = Holder(0, "", 0.0, "another chainette process (which has just started)")


class RunLock:
    """The exclusive lock on the run directory whose state folder is `state`, taken at once or refused.

    `command` says what holds it (a refused process names it). The state folder is created when missing;
    `release` (or leaving the `with` block) lets go, and so does the end of the process.
    """

    def __init__(self, state: Path, command: str):
        _require_locks()
        self.path = state / LOCK_FILE
        try:
            state.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ChainetteError(f"Output directory {state.parent} is not writable: {exc.strerror} ({exc.filename}).") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.release()
            raise (in_use(state.parent, read_holder(self.path)) if exc.errno in _HELD else _unsupported(state.parent, exc)) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(record).encode(), 0)
        except OSError as exc:
            self.release()
            raise ChainetteError(f"Output directory {state.parent} is not writable: {exc.strerror} ({self.path}).") from None

    def release(self) -> None:
        """Let go of the lock (closing its file does); nothing if already released."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(state: Path) -> Holder | None:
    """Who holds the lock of the run directory whose state folder is `state` now, without taking it or creating
    anything; None when nobody does (or the file system has no locks)."""
    _require_locks()
    try:
        fd = os.open(state / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _HELD:
            return read_holder(state / LOCK_FILE)
        return None
    finally:
        os.close(fd)
    return None


def read_holder(path: Path) -> Holder:
    """The holder a held lock file records (UNRECORDED while the holder has not written itself down yet)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(record["pid"]), str(record["host"]), float(record["since"]), str(record["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return UNRECORDED


def in_use(root: Path, found: Holder) -> ChainetteError:
    """The refusal of a directory another process holds."""
    return ChainetteError(
        f"Output directory {root} is in use by {found.describe()}: two processes working in one run directory could corrupt "
        f"it, so this one did not start and changed nothing. Wait for that one to end, or stop it{found.how_to_stop()}, "
        "then run this command again; or choose another output directory."
    )


def _unsupported(root: Path, exc: OSError) -> ChainetteError:
    return ChainetteError(
        f"Cannot lock output directory {root} ({exc.strerror}): chainette locks a run directory so that no two processes "
        "write into it at once, and this file system refused the lock (some network and FUSE file systems do). Use a "
        "directory on a local disk, or on a network file system with working locks (NFSv4, or NFSv3 with lockd)."
    )


def _require_locks() -> None:
    """Refuse a platform without flock: Windows, where chainette does not run (but under WSL)."""
    if sys.platform == "win32":
        raise ChainetteError("chainette locks its run directories with POSIX file locks, which Windows lacks: run it under WSL.")
