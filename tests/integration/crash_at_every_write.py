"""Deterministic crash injection, the way SQLite tests itself: for k = 1, 2, ... run `chainette run` in a forked
child that writes half of its k-th write of the run's files and then SIGKILLs itself, then resume it in another child,
until a run makes fewer than k writes (a whole run exits with EXIT_SOME_ROWS_FAILED: the torture chain fails
some rows by design). Usage: crash_at_every_write.py ROOT -- chainette run args (with OUT for
the output directory); each k runs in ROOT/<k>. Prints how many writes a whole run makes."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
import signal
import sys

from chainette.cli.app import build_app, main
from chainette.outcome import EXIT_SOME_ROWS_FAILED
from chainette.plugins import get_plugins
import chainette.run.appends as appends


def warm_up() -> None:
    """Import in the parent what every child needs, so that each fork starts at once."""
    build_app(with_plugins=False)
    get_plugins().resolve("fake")
    for module in ("chainette.cli.run", "chainette.ui.summary", "pyarrow.parquet"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def crash_at(k: int) -> None:
    """Make the k-th call of the run's write_all write half its bytes, then kill the process."""
    real = appends.write_all
    calls = 0

    def write_all(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == k:
            real(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real(fd, data)

    appends.write_all = write_all


def in_child(args: list[str], k: int | None) -> int:
    """Run the CLI in a forked child (crashing at write k if given); return its wait status."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        if k is not None:
            crash_at(k)
        os._exit(main(args))
    return os.waitpid(pid, 0)[1]


def main_loop(root: Path, template: list[str]) -> int:
    k = 1
    while True:
        args = [str(root / str(k)) if arg == "OUT" else arg for arg in template]
        status = in_child(args, k)
        if os.WIFEXITED(status):
            if os.WEXITSTATUS(status) != EXIT_SOME_ROWS_FAILED:
                raise SystemExit(f"run {k} failed with exit status {os.WEXITSTATUS(status)}")
            return k - 1
        if os.WTERMSIG(status) != signal.SIGKILL:
            raise SystemExit(f"run {k} died of signal {os.WTERMSIG(status)}")
        resumed = in_child(args, None)
        if not (os.WIFEXITED(resumed) and os.WEXITSTATUS(resumed) == EXIT_SOME_ROWS_FAILED):
            raise SystemExit(f"the resume after a crash at write {k} failed (status {resumed})")
        k += 1


if __name__ == "__main__":
    separator = sys.argv.index("--")
    warm_up()
    print(main_loop(Path(sys.argv[1]), sys.argv[separator + 1 :]))
