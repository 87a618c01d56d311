"""Warm servers: vLLM servers started by `chainette warmup` that outlive it, recorded in a state file for later runs.

The state folder is $CHAINETTE_STATE_DIR, else ~/.cache/chainette; `vllm-servers.json` in it lists one
entry per (engine, server) with the server key, URL, pid (its process group), the process's identity (so that a pid
the system gave to another process since is never stopped), start time, log and the command shown (no secret). Every read-modify-write of a state file (`locked_state`, also used for
`chainette_vllm.owned`'s file) holds an flock on `FILE.lock`, so chainette processes may run
`warm_up`, `stop_warm` (`chainette kill`) and `list_warm` (`chainette ps`) at once. `warm_server` is
how a run finds a recorded server with the key it needs, running and healthy, to use without owning it. Outside a run, server logs go to the state folder's `logs/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import json
import os
from pathlib import Path
import threading
from typing import Any

import httpx2

from chainette.engines import EngineConfig
from chainette.errors import ConfigError
from chainette_vllm import VllmOptions
from chainette_vllm.process import Server, group_alive, healthy, identity, launch, stop_group, stop_loading, wait_until_healthy
from chainette_vllm.spec import serve_spec

STATE_FILE = "vllm-servers.json"


def state_dir() -> Path:
    """$CHAINETTE_STATE_DIR, else ~/.cache/chainette."""
    return Path(os.environ.get("CHAINETTE_STATE_DIR") or Path.home() / ".cache" / "chainette")


def log_dir(run_dir: Path | None) -> Path:
    """Where server logs go: the run's `logs/` folder, or the state folder's outside a run."""
    return (run_dir if run_dir is not None else state_dir()) / "logs"


def warm_up(config: EngineConfig[VllmOptions]) -> str:
    """Start (or find running) the server for `config` so that it outlives this process, record it, return its URL.

    A server it starts is recorded as soon as its process exists, so that a warmup killed while the model loads
    leaves a server that `chainette ps` lists and `chainette kill` stops; a start that fails forgets it again."""
    spec = serve_spec(config)
    found = warm_server(spec.key)
    if found is not None:
        _record(config, spec.key, found)
        return found.url
    server = launch(spec, log_dir(None), tied=False)
    _record(config, spec.key, server)
    try:
        wait_until_healthy(server, spec, threading.Event())
    except BaseException:
        stop_loading(server)
        with locked_state(STATE_FILE) as entries:
            entries[:] = [e for e in entries if e["pid"] != server.pid]
        raise
    return server.url


def _record(config: EngineConfig[VllmOptions], key: str, server: Server) -> None:
    """Add `server` to the state file as the warm server of engine `config.name` (once)."""
    with locked_state(STATE_FILE) as entries:
        if not any(e["engine"] == config.name and e["pid"] == server.pid for e in entries):
            entries.append(
                {
                    "engine": config.name,
                    "model": config.model,
                    "key": key,
                    "url": server.url,
                    "pid": server.pid,
                    "server_id": identity(server.pid),
                    "started_at": server.started_at,
                    "log": str(server.log),
                    "command": server.command,
                }
            )


def stop_warm(names: list[str] | None) -> list[dict[str, Any]]:
    """Stop the warm servers of the engines `names` (None: all) and forget them; return the entries removed."""
    with locked_state(STATE_FILE) as entries:
        if names is not None:
            unknown = sorted(set(names) - {e["engine"] for e in entries})
            if unknown:
                known = ", ".join(sorted({e["engine"] for e in entries})) or "none"
                raise ConfigError(f"No server started by warmup for {', '.join(unknown)} (warm engines: {known}). See `chainette ps`.")
        chosen = [e for e in entries if names is None or e["engine"] in names]
        pids = {e["pid"] for e in chosen}
        for pid in sorted({e["pid"] for e in chosen if still_running(e)}):
            stop_group(pid)
        removed = [e for e in entries if e["pid"] in pids]
        entries[:] = [e for e in entries if e["pid"] not in pids]
    return removed


def list_warm() -> list[dict[str, Any]]:
    """The recorded warm servers that are still running (dead ones are forgotten)."""
    with locked_state(STATE_FILE) as entries:
        entries[:] = [e for e in entries if still_running(e)]
        return list(entries)


def warm_server(key: str) -> Server | None:
    """A server `warmup` started for `key` that is running and healthy (its `process` is None: not our child)."""
    with httpx2.Client(timeout=2.0, trust_env=False) as http:
        for entry in read_state(STATE_FILE):
            if entry["key"] == key and still_running(entry) and healthy(http, entry["url"]):
                return Server(entry["url"], entry["pid"], entry["command"], Path(entry["log"]), entry["started_at"])
    return None


def still_running(entry: dict[str, Any]) -> bool:
    """Whether the recorded server still runs: its process group is alive and its leader is the process recorded (an
    entry from before identities were recorded is trusted on its pid alone)."""
    recorded = entry.get("server_id")
    return group_alive(entry["pid"]) and (recorded is None or identity(entry["pid"]) == recorded)


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
