"""Servers a chainette process started for its own use, recorded so that a later process can deal with those left
behind when their owner was killed (`kill -9`) before it could stop them.

`vllm-owned.json` in the state folder (see `chainette_vllm.state`, whose file locking it shares) lists one
entry per owned server: its server key, engine, URL (with its port), pid (its process group), owner pid,
start time, log and command, and the `identity` of the server's and the owner's processes, so that a
reused pid is never taken for them. `record` and `forget` bracket a server's life. `adopt_survivor` runs
before a new server starts: a server for the same key whose owner is dead is adopted when healthy (this
process becomes its owner) and has its process group killed otherwise, so that no second server starts
beside it. Where /proc cannot tell identities (not Linux), survivors are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx2

from chainette_vllm.process import LOADING_GRACE, Server, healthy, identity, stop_group
from chainette_vllm.state import locked_state

OWNED_FILE = "vllm-owned.json"


def record(key: str, engine: str, server: Server) -> None:
    """Note `server` (just launched for `key` by engine `engine`) as this process's."""
    entry = {
        "key": key,
        "engine": engine,
        "url": server.url,
        "pid": server.pid,
        "server_id": identity(server.pid),
        "owner": os.getpid(),
        "owner_id": identity(os.getpid()),
        "started_at": server.started_at,
        "log": str(server.log),
        "command": server.command,
    }
    with locked_state(OWNED_FILE) as entries:
        entries.append(entry)


def forget(server: Server) -> None:
    """Drop the entry of `server` (stopped, or failed to start)."""
    with locked_state(OWNED_FILE) as entries:
        entries[:] = [e for e in entries if e["pid"] != server.pid]


def adopt_survivor(key: str) -> Server | None:
    """A healthy server for `key` left by a dead owner, now this process's; other survivors for `key` are killed.

    Entries of dead owners whose server is gone are dropped, whatever their key.
    """
    with locked_state(OWNED_FILE) as entries:
        orphans = [e for e in entries if _owner_dead(e)]
        survivors = [e for e in orphans if e["key"] == key and _server_running(e)]
        with httpx2.Client(timeout=2.0, trust_env=False) as http:
            adopted = next((e for e in survivors if healthy(http, e["url"])), None)
        stale = [e for e in orphans if e["key"] == key or not _server_running(e)]
        entries[:] = [e for e in entries if e not in stale]
        if adopted is not None:
            entries.append({**adopted, "owner": os.getpid(), "owner_id": identity(os.getpid())})
    for entry in survivors:
        if entry is not adopted:
            stop_group(entry["pid"], grace=LOADING_GRACE)
    return None if adopted is None else _server(adopted)


def _owner_dead(entry: dict[str, Any]) -> bool:
    owner = identity(entry["owner"])
    return owner is None or owner != entry["owner_id"]


def _server_running(entry: dict[str, Any]) -> bool:
    """Whether the entry's server process is the one recorded and still runs (False where /proc cannot tell)."""
    return entry["server_id"] is not None and identity(entry["pid"]) == entry["server_id"]


def _server(entry: dict[str, Any]) -> Server:
    return Server(entry["url"], entry["pid"], entry["command"], Path(entry["log"]), entry["started_at"])
