"""Engine lifecycle during a run: start an engine before the first node that needs it, stop it after the last."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chainette.client import Client
from chainette.engines import EngineConfig
from chainette.errors import ConfigError
from chainette.plugins import get_plugins


@dataclass
class RunningEngine:
    """An engine ready for requests: its config (endpoint resolved), client and request slots."""

    config: EngineConfig
    client: Client
    slots: asyncio.Semaphore


class EnginePool:
    """Starts and stops the engines of one run, following the plan of which top-level node uses which engine.

    A lazy engine runs from the first node of each contiguous run of nodes that use it to the last;
    an engine with `lazy=False` runs for the whole run.
    """

    def __init__(self, configs: dict[str, EngineConfig], plan: list[set[str]]):
        self.configs = configs
        self.plan = plan
        self.running: dict[str, RunningEngine] = {}

    async def start_persistent(self) -> None:
        for name in sorted(set().union(*self.plan)):
            if not self.configs[name].lazy:
                await self.start(name)

    async def before(self, position: int) -> None:
        for name in sorted(self.plan[position]):
            if name not in self.running:
                await self.start(name)

    async def after(self, position: int) -> None:
        following = self.plan[position + 1] if position + 1 < len(self.plan) else set()
        for name in sorted(self.plan[position] - following):
            if self.configs[name].lazy:
                await self.stop(name)

    def get(self, name: str) -> RunningEngine:
        return self.running[name]

    async def start(self, name: str) -> RunningEngine:
        plugins = get_plugins()
        config = self.configs[name]
        endpoint = await asyncio.to_thread(plugins.call, config.backend, "ensure_running", config=config) or config.endpoint
        resolved = config.model_copy(update={"endpoint": endpoint})
        client = plugins.call(config.backend, "make_client", config=resolved)
        if client is None:
            raise ConfigError(f"Backend '{config.backend}' returned no client for engine '{name}'.")
        engine = RunningEngine(resolved, client, asyncio.Semaphore(config.options.max_concurrency))
        self.running[name] = engine
        return engine

    async def stop(self, name: str) -> None:
        engine = self.running.pop(name, None)
        if engine is None:
            return
        try:
            await engine.client.aclose()
        finally:
            await asyncio.to_thread(get_plugins().call, engine.config.backend, "stop_engine", config=engine.config)

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
