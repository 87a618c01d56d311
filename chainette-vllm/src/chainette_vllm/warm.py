"""Warm servers: vLLM servers started by `chainette warmup` that outlive it, recorded in a state file for later runs.

`vllm-servers.json` in the state folder (`chainette_vllm.state`) lists one entry per (engine, server) with the server
key, URL, pid (its process group), the process's identity (so that a pid the system gave to another process since is
never stopped), start time, log and the command shown (no secret). Every read-modify-write of it holds the state file's
lock, so chainette processes may run `warm_up`, `stop_warm` (`chainette kill`) and `list_warm` (`chainette ps`) at once.
`warm_server` is how a run finds a recorded server with the key it needs, running and healthy, to use without owning it.
"""

from __future__ import annotations

from pathlib import Path
import threading
from typing import Any

import httpx2

from chainette.engines import EngineConfig
from chainette.errors import ConfigError
from chainette_vllm.options import VllmOptions
from chainette_vllm.process import Server, group_alive, healthy, identity, launch, stop_group, stop_loading, wait_until_healthy
from chainette_vllm.spec import serve_spec
from chainette_vllm.state import locked_state, log_dir, read_state

STATE_FILE = "vllm-servers.json"


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
