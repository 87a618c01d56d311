"""A block worker, in this process (Ray only wraps it as an actor): the engines it starts and the response cache it
opens for its first block serve the next ones, and `close` stops them, a server its backend started included; once
they are started, blocks run side by side."""

from __future__ import annotations

import asyncio
import sqlite3

import orjson
from pydantic import BaseModel

from chainette import Answer, Request, Step, Usage, hookimpl, register_engine
from chainette.cache import cache_path, open_cache
from chainette.engines import get_engine
from chainette.execution import executor
from chainette.frontier import Commit, Row
from chainette.nodes import INPUT_ID
from chainette.plugins import get_plugins
from chainette.run.options import RunOptions
from chainette_ray.block import BlockResult, BlockWorker


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


class ServerBackend:
    """A backend that "starts a server" for each engine (ensure_running) and records its clients and server's lifecycle."""

    def __init__(self, latency: float = 0.0) -> None:
        self.events: list[str] = []
        self.latency = latency

    @hookimpl
    def ensure_running(self, config):
        self.events.append("server started")

    @hookimpl
    def make_client(self, config):
        backend = self

        class Client:
            async def complete(self, request: Request) -> Answer:
                if backend.latency:
                    backend.events.append(f"ask {request.row_id}")
                    await asyncio.sleep(backend.latency)
                    backend.events.append(f"answer {request.row_id}")
                return Answer(orjson.dumps({"label": request.row_id}).decode(), usage=Usage(1, 1))

            async def aclose(self) -> None:
                backend.events.append("client closed")

        backend.events.append("client made")
        return Client()

    @hookimpl
    def stop_engine(self, config):
        self.events.append("server stopped")


def block(first: int, count: int) -> bytes:
    """The input frontier's lines of rows `first` to `first + count - 1`, as the driver ships a block."""
    rows = (Row(str(index), {INPUT_ID: {"text": f"row {index}"}}, INPUT_ID, index=index) for index in range(first, first + count))
    return b"".join(Commit(row.row_id, [row]).encode() for row in rows)


def worker_of(backend: ServerBackend, *, cache: bool) -> BlockWorker:
    """A block worker over one step on an engine of `backend`, with the response cache on or off."""
    get_plugins().register("servers", backend)
    register_engine("e", backend="servers", model="m")
    step = Step(id="label", input_model=Text, output_model=Label, engine_name="e", user_prompt="{{text}}")
    return BlockWorker([step], {"e": get_engine("e")}, RunOptions(cache=cache))


def stored_answers() -> int:
    """How many answers the response cache file holds (what the worker flushed)."""
    with sqlite3.connect(cache_path()) as db:
        return int(db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])


def answered(results: list[BlockResult]) -> list[str]:
    """The ids of the rows the blocks' step committed, block after block."""
    return [source for result in results for source in result.units["label"].sources]


def test_the_engines_of_the_first_block_serve_the_next_ones_until_close():
    backend = ServerBackend()
    worker = worker_of(backend, cache=False)

    async def blocks() -> list[BlockResult]:
        results = [await worker.run(block(first, 5), 5) for first in (0, 5, 10)]
        assert backend.events == ["server started", "client made"]
        await worker.close()
        return results

    results = asyncio.run(blocks())
    assert backend.events == ["server started", "client made", "client closed", "server stopped"]
    assert answered(results) == [str(index) for index in range(15)]


def test_blocks_given_at_once_start_the_engine_once_then_run_side_by_side():
    """The first block runs alone (a second start of the engine would start a second server); the next two share the
    engine at once: the third asks its first row before the second's last answer came."""
    backend = ServerBackend(latency=0.01)
    worker = worker_of(backend, cache=False)

    async def blocks() -> list[BlockResult]:
        results = await asyncio.gather(*(worker.run(block(first, 5), 5) for first in (0, 5, 10)))
        await worker.close()
        return results

    results = asyncio.run(blocks())
    assert backend.events.count("server started") == 1 and backend.events.count("client made") == 1
    events = backend.events
    assert events.index("ask 5") > max(events.index(f"answer {row}") for row in range(5))
    assert events.index("ask 10") < max(events.index(f"answer {row}") for row in range(5, 10))
    assert answered(results) == [str(index) for index in range(15)]


def test_the_response_cache_is_opened_once_and_each_block_s_answers_are_stored_when_it_ends(monkeypatch):
    opened = []
    monkeypatch.setattr(executor, "open_cache", lambda *args: opened.append(args) or open_cache(*args))
    worker = worker_of(ServerBackend(), cache=True)

    async def blocks() -> None:
        for first in (0, 5):
            await worker.run(block(first, 5), 5)
            assert stored_answers() == first + 5
        assert len(opened) == 1 and worker.lasting.cache is not None
        await worker.close()

    asyncio.run(blocks())
    assert worker.lasting.cache is None
