"""The vLLM servers this process uses, by server key: found, shared, started and stopped for engines without an endpoint.

`ensure_running` and `release` back the `ensure_running` and `stop_engine` hooks. An engine with an
endpoint has it checked (`chainette_vllm.probe`); one without gets the server its ServeSpec names: one
this process already uses, else a healthy one `chainette warmup` recorded (used, never stopped), else a
healthy one whose owner died (adopted, see `chainette_vllm.owned`), else a new one
(`chainette_vllm.process`), tied to this process and recorded as its own. The registry counts the
engines using each server and stops the ones it owns when the count drops to zero, or at interpreter
exit as a safety net. `exit_check` lets an engine's client tell a server that died from a passing
connection failure. Each server key has its own lock, held while its server is found, started (which
can take minutes) or stopped: engines needing the same server share one start and a start waits for a
stop of that server to finish, while engines needing different servers start and stop concurrently.
A global lock guards only the dict of keys and is held for a lookup.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
import threading

from chainette.engines import EngineConfig
from chainette.secrets import engine_secrets
from chainette_vllm import owned
from chainette_vllm.options import API_KEY_ENV, VllmOptions
from chainette_vllm.probe import check_endpoint
from chainette_vllm.process import Server, exit_error, launch, stop_group, stop_loading, wait_until_healthy
from chainette_vllm.spec import ServeSpec, serve_spec
from chainette_vllm.state import log_dir
from chainette_vllm.warm import warm_server


@dataclass
class _Slot:
    """One server key's entry; `lock` guards the other fields and is held across a start or stop of its server."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Server | None = None
    owned: bool = False  # started or adopted by this process: stopped when its last engine is released
    users: int = 0


_slots: dict[str, _Slot] = {}
_slots_lock = threading.Lock()  # guards `_slots` itself, never held while a slot's lock is awaited


def ensure_running(config: EngineConfig[VllmOptions], run_dir: Path | None, cancelled: threading.Event | None = None) -> str:
    """The base URL for the engine: its checked endpoint, a server this process or `warmup` started, or a new one.

    Setting `cancelled` while a new server loads stops it and raises EngineError.
    """
    if config.endpoint:
        return check_endpoint(config)
    spec = serve_spec(config)
    slot = _slot(spec.key)
    with slot.lock:
        if slot.server is None:
            slot.server, slot.owned = _find_or_start(spec, run_dir, cancelled)
        slot.users += 1
        return slot.server.url


def release(config: EngineConfig[VllmOptions]) -> str | None:
    """One engine is done with its server: stop the server when no engine of this process uses it and it is ours.

    Returns a note when the server keeps running (None when it was stopped, or there was none).
    """
    key = serve_spec(config).key
    with _slots_lock:
        slot = _slots.get(key)
    if slot is None:
        return None
    with slot.lock:
        if slot.server is None:
            return None
        slot.users -= 1
        if slot.users > 0:
            return f"its vLLM server keeps running for {slot.users} other engine(s)"
        kept = not slot.owned
        _forget(slot)
    return "its vLLM server, started by `chainette warmup`, keeps running" if kept else None


def exit_check(config: EngineConfig[VllmOptions]) -> Callable[[], None] | None:
    """For an engine whose URL is a server of this registry: a check that raises EngineError once that server has ended.

    None for any other URL (an endpoint the user runs).
    """
    with _slots_lock:
        # Reading `slot.server` without its lock is safe here: the engine's own ensure_running set it and holds it in use.
        found = next((slot.server for slot in _slots.values() if slot.server is not None and slot.server.url == config.endpoint), None)
    return None if found is None else partial(_raise_if_ended, found, config.name, engine_secrets(config, default_env=API_KEY_ENV))


@atexit.register
def _stop_owned_servers() -> None:
    """Safety net: stop every server this process started and still holds (e.g. when cleanup was interrupted)."""
    with _slots_lock:
        slots = list(_slots.values())
    for slot in slots:
        with slot.lock:
            _forget(slot)


def _slot(key: str) -> _Slot:
    with _slots_lock:
        return _slots.setdefault(key, _Slot())


def _find_or_start(spec: ServeSpec, run_dir: Path | None, cancelled: threading.Event | None) -> tuple[Server, bool]:
    """A healthy server `warmup` started for `spec` (not ours to stop), else one adopted or started (ours); with whether it is ours."""
    warm = warm_server(spec.key)
    if warm is not None:
        return warm, False
    return owned.adopt_survivor(spec.key) or _start(spec, run_dir, cancelled), True


def _start(spec: ServeSpec, run_dir: Path | None, cancelled: threading.Event | None) -> Server:
    """A new server for `spec`, tied to this process and recorded as its own from launch until it is stopped."""
    server = launch(spec, log_dir(run_dir), tied=True)
    try:
        owned.record(spec.key, spec.engine, server)
        wait_until_healthy(server, spec, cancelled or threading.Event())
    except BaseException:
        stop_loading(server)
        owned.forget(server)
        raise
    return server


def _raise_if_ended(server: Server, engine: str, secrets: frozenset[str]) -> None:
    """Raise the EngineError saying how `server` ended, once it has."""
    error = exit_error(server, engine, secrets)
    if error is not None:
        raise error


def _forget(slot: _Slot) -> None:
    """Empty `slot` (its lock held), stopping its server if this process started it."""
    server, ours = slot.server, slot.owned
    slot.server, slot.owned, slot.users = None, False, 0
    if server is not None and ours:
        stop_group(server.pid, server.process)
        owned.forget(server)
