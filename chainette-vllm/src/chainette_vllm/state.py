"""Chainette's state folder, shared by the processes of one user: $CHAINETTE_STATE_DIR, else ~/.cache/chainette.

It holds the state files (`vllm-servers.json` of `chainette_vllm.warm`, `vllm-owned.json` of `chainette_vllm.owned`),
the flags each `vllm serve` accepts (`chainette_vllm.flags`) and, outside a run, server logs. Every read-modify-write of
a state file (`locked_state`) holds an flock on `FILE.lock`, so chainette processes may change one at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import json
import os
from pathlib import Path
from typing import Any

from chainette.errors import ConfigError


def state_dir() -> Path:
    """$CHAINETTE_STATE_DIR, else ~/.cache/chainette."""
    return Path(os.environ.get("CHAINETTE_STATE_DIR") or Path.home() / ".cache" / "chainette")


def log_dir(run_dir: Path | None) -> Path:
    """Where server logs go: the run's `logs/` folder, or the state folder's outside a run."""
    return (run_dir if run_dir is not None else state_dir()) / "logs"


@contextmanager
def locked_state(name: str) -> Iterator[list[dict[str, Any]]]:
    """The entries of the state file `name`, locked against other chainette processes, written back when the block succeeds."""
    import fcntl  # POSIX only, like starting servers; an endpoint engine works without it

    folder = state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.lock").touch()
    except OSError as exc:
        raise ConfigError(
            f"Cannot write to chainette's state folder {folder} ({exc}). Set CHAINETTE_STATE_DIR to a writable folder."
        ) from None
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read_state(name)
        yield entries
        temporary = folder / f"{name}.tmp"
        temporary.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, folder / name)


def read_state(name: str) -> list[dict[str, Any]]:
    """The entries of the state file `name` ([] when there is none); ConfigError when it is unreadable or not a list."""
    path = state_dir() / name
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read {path} ({exc}). Delete it; servers it listed keep running until you stop them (their pids are in the file)."
        ) from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path} is not a list of servers. Delete it; servers it listed keep running until you stop them.")
    return entries
