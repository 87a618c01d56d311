"""A block worker, in this process (Ray only wraps it as an actor): the engines it starts for its first block serve
the next ones, and `close` stops them, a server its backend started included."""

from __future__ import annotations

import orjson
from pydantic import BaseModel

from chainette import Answer, Request, Step, Usage, hookimpl, register_engine
from chainette.engines import get_engine
from chainette.frontier import Commit, Row
from chainette.nodes import INPUT_ID
from chainette.plugins import get_plugins
from chainette.run.options import RunOptions
from chainette_ray.block import BlockWorker


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


class ServerBackend:
    """A backend that "starts a server" for each engine (ensure_running) and records its clients and server's lifecycle."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def ensure_running(self, config):
        self.events.append("server started")

    @hookimpl
    def make_client(self, config):
        backend = self

        class Client:
            async def complete(self, request: Request) -> Answer:
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


def test_the_engines_of_the_first_block_serve_the_next_ones_until_close():
    backend = ServerBackend()
    get_plugins().register("servers", backend)
    register_engine("e", backend="servers", model="m")
    step = Step(id="label", input_model=Text, output_model=Label, engine_name="e", user_prompt="{{text}}")
    worker = BlockWorker([step], {"e": get_engine("e")}, RunOptions(cache=False))

    results = [worker.run(block(first, 5), 5) for first in (0, 5, 10)]
    assert backend.events == ["server started", "client made"]
    worker.close()

    assert backend.events == ["server started", "client made", "client closed", "server stopped"]
    answered = [orjson.loads(line)["source"] for result in results for line in result.frontiers["label"].splitlines()]
    assert answered == [str(index) for index in range(15)]
