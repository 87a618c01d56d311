"""Engine lifecycle during a run: start an engine before the first node that needs it, stop it after the
last; and the run's stop signal (first Ctrl-C or SIGTERM)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
import threading

from chainette.balancer import BalancedClient, Endpoint
from chainette.client import Client
from chainette.engines import EngineConfig, public_url
from chainette.errors import ConfigError, RunInterrupted
from chainette.events import EngineChanged, EventBus
from chainette.plugins import get_plugins
from chainette.policy import EngineGate


class RunControl:
    """Once `stop` is called, nodes take no new rows (rows in flight still finish) and engine start-ups are cancelled."""

    def __init__(self) -> None:
        self.stopping: str | None = None
        self.exit_code = 130
        self._on_stop: list[Callable[[], None]] = []

    def stop(self, reason: str, exit_code: int) -> None:
        if self.stopping is None:
            self.stopping, self.exit_code = reason, exit_code
            for callback in self._on_stop:
                callback()

    def interrupted(self) -> RunInterrupted:
        return RunInterrupted(self.stopping or "Interrupted", self.exit_code)

    @contextmanager
    def cancellable(self) -> Iterator[threading.Event]:
        """An event set when the run stops or the awaiting task is cancelled, for work running in a thread."""
        event = threading.Event()
        self._on_stop.append(event.set)
        if self.stopping:
            event.set()
        try:
            yield event
        except asyncio.CancelledError:
            event.set()
            raise
        finally:
            self._on_stop.remove(event.set)


@dataclass
class RunningEngine:
    """An engine ready for requests: its config (endpoint resolved), client and admission gate."""

    config: EngineConfig
    client: Client
    gate: EngineGate


class EnginePool:
    """Starts and stops the engines of one run, following the plan of which top-level node uses which engine.

    A lazy engine runs from the first node of each contiguous run of nodes that use its server
    (engines whose backends report the same `server_key` share one) to the last; nodes that use
    no engine (applies) do not break a run. An engine with `lazy=False` runs for the whole run.
    """

    def __init__(self, configs: dict[str, EngineConfig], plan: list[set[str]], run_dir: Path | None, control: RunControl, bus: EventBus):
        self.configs = configs
        self.plan = plan
        self.run_dir = run_dir
        self.control = control
        self.bus = bus
        self.running: dict[str, RunningEngine] = {}
        plugins = get_plugins()
        self.keys = {name: plugins.call(c.backend, "server_key", config=c) or f"engine:{name}" for name, c in configs.items()}

    async def start_persistent(self) -> None:
        for name in sorted(set().union(*self.plan)):
            if not self.configs[name].lazy:
                await self.start(name)

    async def before(self, position: int) -> None:
        for name in sorted(self.plan[position]):
            if name not in self.running:
                await self.start(name)

    async def after(self, position: int) -> None:
        following = next((engines for engines in self.plan[position + 1 :] if engines), set())
        needed = {self.keys[name] for name in following}
        for name in sorted(self.running):
            if self.configs[name].lazy and self.keys[name] not in needed:
                await self.stop(name)

    def get(self, name: str) -> RunningEngine:
        return self.running[name]

    async def start(self, name: str) -> RunningEngine:
        config = self.configs[name]
        self.bus.emit(EngineChanged(engine=name, state="starting", detail=f"{config.backend}: {config.model}"))
        urls = config.endpoint if isinstance(config.endpoint, list) else [config.endpoint]
        endpoints = [await self._connect(config, url) for url in urls]
        if len(endpoints) == 1:
            resolved, client = endpoints[0]
        else:
            resolved = config.model_copy(update={"endpoint": [c.endpoint for c, _ in endpoints]})
            client = BalancedClient([Endpoint(c.endpoint, client) for c, client in endpoints])
        engine = RunningEngine(resolved, client, EngineGate(config.options))
        self.running[name] = engine
        shown = resolved.endpoint if isinstance(resolved.endpoint, list) else [resolved.endpoint]
        self.bus.emit(EngineChanged(engine=name, state="ready", detail=", ".join(public_url(url) or "" for url in shown)))
        return engine

    async def _connect(self, config: EngineConfig, url: str | None) -> tuple[EngineConfig, Client]:
        """Make sure the server at `url` answers (the backend may start it) and make its client."""
        plugins = get_plugins()
        single = config.model_copy(update={"endpoint": url})
        with self.control.cancellable() as cancelled:
            ensure = partial(plugins.call, config.backend, "ensure_running", config=single, run_dir=self.run_dir, cancelled=cancelled)
            resolved = single.model_copy(update={"endpoint": await asyncio.to_thread(ensure) or url})
        client = plugins.call(config.backend, "make_client", config=resolved)
        if client is None:
            raise ConfigError(f"Backend '{config.backend}' returned no client for engine '{config.name}'.")
        return resolved, client

    async def stop(self, name: str) -> None:
        engine = self.running.pop(name, None)
        if engine is None:
            return
        try:
            await engine.client.aclose()
        finally:
            config = self.configs[name]
            await asyncio.to_thread(get_plugins().call, config.backend, "stop_engine", config=config)
            self.bus.emit(EngineChanged(engine=name, state="stopped"))

    async def stop_all(self) -> None:
        """Stop every running engine, even when one of them fails to stop (the first failure is raised)."""
        failure: BaseException | None = None
        for name in list(self.running):
            try:
                await self.stop(name)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
