"""Engine lifecycle during a run: start an engine before the first node that needs it, stop it after the last."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chainette.balancer import BalancedClient, Endpoint
from chainette.batch import BatchClient
from chainette.client import Client
from chainette.engines import EngineConfig, EngineOptions, engine_price
from chainette.events import EngineChanged, EventBus
from chainette.execution.segments import claimed_devices, plan_segments, server_keys
from chainette.execution.stopping import StopSignal
from chainette.plugins import get_plugins
from chainette.policy import EngineGate
from chainette.secrets import public_url

if TYPE_CHECKING:
    from chainette.telemetry import Telemetry


@dataclass
class RunningEngine:
    """An engine ready for requests: its config, client (over every replica) and admission gate; or, for an engine
    answering through batch jobs (`batch=True`), its batch client instead of a client (no server is started for it)."""

    config: EngineConfig[EngineOptions]
    client: Client | None
    gate: EngineGate
    batches: BatchClient | None = None


class EnginePool:
    """Starts and stops the engines of one run, following the plan of which top-level node uses which engine.

    The nodes run in segments (chainette.execution.segments). A lazy engine runs from the first segment of each
    contiguous run of segments that use its server (engines whose backends report the same `server_key` share one)
    to the last; segments that use no engine (applies) do not break a run. An engine with `lazy=False` runs for the
    whole run.

    With `lasting` (a dict its owner keeps from one session to the next, such as a block worker's), engines outlive the
    session: one found there is used instead of started (by every session that finds it, at once), and one the session
    is done with is left there instead of stopped, for the owner to stop (chainette.execution.lasting); but not one
    whose gate a stop closed, nor, when the nodes run in several segments, a lazy one (it gives its GPUs to the next
    segment, or the next session's first): that one is stopped, and taken out of `lasting`.
    """

    def __init__(
        self,
        configs: dict[str, EngineConfig[EngineOptions]],
        plan: list[set[str]],
        run_dir: Path | None,
        control: StopSignal,
        bus: EventBus,
        lasting: dict[str, RunningEngine] | None = None,
    ):
        self.configs = configs
        self.lasting = lasting
        self.plan = plan
        self.run_dir = run_dir
        self.control = control
        self.bus = bus
        self.running: dict[str, RunningEngine] = {}
        self.keys = server_keys(configs)
        self.devices = claimed_devices(configs)
        self.segments = plan_segments(plan, configs, self.keys, self.devices)
        self.telemetry: Telemetry | None = None  # the run's OpenTelemetry, when it asked for it

    async def start_persistent(self) -> None:
        for name in sorted(set().union(*self.plan)):
            if not self.configs[name].lazy:
                await self.start(name)

    async def before(self, segment: list[int]) -> None:
        """Start the engines the nodes at these top-level positions use."""
        for name in sorted(set().union(*(self.plan[position] for position in segment))):
            if name not in self.running:
                await self.start(name)

    async def after(self, following: list[int]) -> None:
        """Stop the lazy engines whose servers the nodes at the `following` positions (the next segment) do not use."""
        needed = {self.keys[name] for position in following for name in self.plan[position]}
        for name in sorted(self.running):
            if self.configs[name].lazy and self.keys[name] not in needed:
                await self._release(name)

    def get(self, name: str) -> RunningEngine:
        return self.running[name]

    async def start(self, name: str) -> RunningEngine:
        config = self.configs[name]
        if self.lasting is not None and name in self.lasting:
            engine = self.running[name] = self.lasting[name]
            self.control.on_stop(engine.gate.close)
            return engine
        self.bus.emit(EngineChanged(engine=name, state="starting", detail=f"{config.backend}: {config.model}"))
        if config.options.batch:
            batches = get_plugins().hooks(config.backend).make_batch_client(config, self.run_dir)
            engine = self.running[name] = RunningEngine(config, None, self._gate(config), batches)
            self.bus.emit(EngineChanged(engine=name, state="ready", detail="batch jobs"))
            return engine
        endpoints = [await self._connect(config.for_url(url)) for url in config.urls]
        client = endpoints[0][1] if len(endpoints) == 1 else BalancedClient([Endpoint(url or "", client) for url, client in endpoints])
        engine = RunningEngine(config, client, self._gate(config))
        self.control.on_stop(engine.gate.close)
        self.running[name] = engine
        self.bus.emit(EngineChanged(engine=name, state="ready", detail=", ".join(public_url(url) or "" for url, _ in endpoints)))
        return engine

    def _gate(self, config: EngineConfig[EngineOptions]) -> EngineGate:
        """The engine's admission gate, tracing its requests when the run has telemetry on."""
        tracer = self.telemetry.for_engine(config, engine_price(config)) if self.telemetry is not None else None
        return EngineGate(config.options, tracer)

    async def _connect(self, single: EngineConfig[EngineOptions]) -> tuple[str | None, Client]:
        """Make sure the server at `single.endpoint` answers (the backend may start it); return its URL and client."""
        hooks = get_plugins().hooks(single.backend)
        with self.control.cancellable() as cancelled:
            url = await asyncio.to_thread(hooks.ensure_running, single, self.run_dir, cancelled) or single.endpoint
        return url, hooks.make_client(single.for_url(url))

    async def stop(self, name: str) -> None:
        engine = self.running.pop(name, None)
        if engine is None:
            return
        if self.lasting is not None and self.lasting.get(name) is engine:
            del self.lasting[name]
        if engine.batches is not None:
            await engine.batches.aclose()
            self.bus.emit(EngineChanged(engine=name, state="stopped"))
            return
        try:
            if engine.client is not None:
                await engine.client.aclose()
        finally:
            config = self.configs[name]
            note = await asyncio.to_thread(get_plugins().hooks(config.backend).stop_engine, config)
            self.bus.emit(EngineChanged(engine=name, state="released" if note else "stopped", detail=note or ""))

    async def stop_all(self) -> None:
        """Stop every running engine (or leave it in `lasting`), even when one of them fails to stop (the first failure is raised)."""
        failure: BaseException | None = None
        for name in list(self.running):
            try:
                await self._release(name)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def _release(self, name: str) -> None:
        """Done with the running engine `name` for this session: leave it in `lasting` when it lasts, else stop it."""
        if self.lasting is not None and self._lasts(name):
            self.lasting[name] = self.running.pop(name)
        else:
            await self.stop(name)

    def _lasts(self, name: str) -> bool:
        """Whether the running engine `name` is left in `lasting` at the session's end (see the class)."""
        return not self.running[name].gate.closed and (len(self.segments) == 1 or not self.configs[name].lazy)
