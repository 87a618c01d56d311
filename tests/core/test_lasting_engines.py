"""Engines that outlive a session (EnginePool's `lasting`, what a Ray block worker keeps from one block to the next):
reused instead of started, left running at the session's end instead of stopped, and stopped by their owner; never
kept when a stop closed their gate, nor when a lazy engine would hold GPUs the next session's first segment needs."""

from __future__ import annotations

import asyncio

from chainette import register_engine
from chainette.engines import get_engine
from chainette.events import EngineChanged, EventBus
from chainette.execution.engine_pool import EnginePool, RunningEngine
from chainette.execution.lasting import Lasting
from chainette.execution.stopping import StopSignal


def echo(request, attempt):
    return '{"label": "x", "score": 0.5}'


def session(names: list[str], plan: list[set[str]], lasting: dict[str, RunningEngine], started: list[str]) -> EnginePool:
    """A pool over the engines `names` for the nodes' `plan`, sharing `lasting`; the engines it starts go to `started`."""

    def listen(event: object) -> None:
        if isinstance(event, EngineChanged) and event.state == "starting":
            started.append(event.engine)

    bus = EventBus([listen])
    return EnginePool({name: get_engine(name) for name in names}, plan, None, StopSignal(), bus, lasting)


async def one_session(pool: EnginePool) -> None:
    """Start and stop the engines segment by segment, then end the session, as an executor does."""
    await pool.start_persistent()
    for number, segment in enumerate(pool.segments):
        await pool.before(segment)
        await pool.after(pool.segments[number + 1] if number + 1 < len(pool.segments) else [])
    await pool.stop_all()


def test_a_lasting_engine_is_started_once_for_many_sessions_and_stopped_by_its_owner(scripted):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    lasting = Lasting()
    started: list[str] = []
    pools = [session(["s"], [{"s"}], lasting.engines, started) for _ in range(3)]

    async def main() -> None:
        for pool in pools:
            await one_session(pool)
        assert pools[0].segments == [[0]]
        assert set(lasting.engines) == {"s"} and backend.events == ["start s"]
        await lasting.close({"s": get_engine("s")})

    asyncio.run(main())
    assert started == ["s"]
    assert backend.events == ["start s", "close s", "stop s"] and lasting.engines == {}


def test_an_engine_whose_gate_a_stop_closed_is_stopped_not_kept(scripted):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    lasting: dict[str, RunningEngine] = {}
    pool = session(["s"], [{"s"}], lasting, [])

    async def main() -> None:
        await pool.before([0])
        pool.control.stop("the same error", 1)
        await pool.stop_all()

    asyncio.run(main())
    assert lasting == {} and backend.events == ["start s", "close s", "stop s"]


def test_lazy_engines_taking_turns_on_a_gpu_are_stopped_each_session(scripted):
    backend = scripted(echo)
    register_engine("a", backend="scripted", model="m:0")
    register_engine("b", backend="scripted", model="m:0")
    register_engine("p", backend="scripted", model="m:1", lazy=False)
    lasting: dict[str, RunningEngine] = {}
    started: list[str] = []

    async def main() -> None:
        for _ in range(2):
            pool = session(["a", "b", "p"], [{"a", "p"}, {"b"}], lasting, started)
            assert len(pool.segments) == 2
            await one_session(pool)
        assert set(lasting) == {"p"}

    asyncio.run(main())
    assert started == ["p", "a", "b", "a", "b"]
    assert backend.events.count("stop a") == backend.events.count("stop b") == 2 and "stop p" not in backend.events
