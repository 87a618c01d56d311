"""What outlives one executor session for an owner that runs many of them (a Ray block worker runs one per block):
the engines its sessions keep, each shared by every session that finds it (see EnginePool), and the response cache,
opened by the first session that wants it (opening reads the whole file's size). The owner ends them with `close`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chainette.cache import ResponseCache
from chainette.engines import EngineConfig, EngineOptions
from chainette.events import EventBus
from chainette.execution.engine_pool import EnginePool, RunningEngine
from chainette.execution.stopping import StopSignal


@dataclass
class Lasting:
    """The engines and the response cache that the sessions of one owner share."""

    engines: dict[str, RunningEngine] = field(default_factory=dict)
    cache: ResponseCache | None = None

    def response_cache(self, opening: Callable[[], ResponseCache | None]) -> ResponseCache | None:
        """The shared cache, opened with `opening` when no session has opened it yet (or it could not be)."""
        if self.cache is None:
            self.cache = opening()
        return self.cache

    async def close(self, configs: dict[str, EngineConfig[EngineOptions]]) -> None:
        """Stop the engines (the first failure is raised once all were tried) and close the cache."""
        pool = EnginePool(configs, [], None, StopSignal(), EventBus())
        pool.running, self.engines = self.engines, {}
        try:
            await pool.stop_all()
        finally:
            if self.cache is not None:
                self.cache.close()
                self.cache = None
