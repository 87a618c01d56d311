"""The conformance suite's harness: the engine each check registers, the FakeServer fixture, a client opened
as a run opens it, and the models, requests and JSON helpers the checks share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from functools import partial
import threading
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel
import pytest

from chainette import sampling as sampling_module
from chainette.client import Answer, Client, Request
from chainette.engines import EngineConfig, EngineOptions, clear_engines, register_engine
from chainette.plugins import get_plugins, reset_plugins
from chainette.sampling import SamplingParams
from chainette.schema import schema_name
from chainette.testing.server import FakeServer

ENGINE = "conformance"
HANG_GUARD = 60.0  # seconds after which a check counts as hung: a guard, not a timing assertion
SERVER_USAGE = (11, 7)  # the (prompt, completion) token counts FakeServer reports for every chat request
CHAT_PATHS = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}
NO_SERVER = "the backend talks its own protocol (wire_format = None): no FakeServer check applies"
CONCURRENT = 16
EXTRA = {"conformance_extra": "passed-through"}
# Distinctive values, so that each can be found on the wire whatever key the backend sends it under.
SAMPLING = SamplingParams(
    temperature=0.37,
    top_p=0.91,
    top_k=17,
    min_p=0.03,
    max_tokens=123,
    stop=["<|conformance-stop|>"],
    seed=4242,
    presence_penalty=0.11,
    frequency_penalty=0.12,
    repetition_penalty=1.13,
    extra=EXTRA,
)

T = TypeVar("T")


class Text(BaseModel):
    text: str


class Span(BaseModel):
    start: int
    end: int


class Verdict(BaseModel):
    """An output model with a field of each JSON type, an enum, a list and a nested model ($defs/$ref)."""

    label: Literal["good", "bad"]
    score: float
    count: int
    flagged: bool
    tags: list[str]
    note: str
    span: Span


class Harness:
    """What every check uses; the attributes a backend's test class may set are documented on BackendConformance."""

    backend: ClassVar[str]
    model: ClassVar[str] = "fake-model"
    wire_format: ClassVar[str | None] = "openai"
    chat_path: ClassVar[str | None] = None
    server_class: ClassVar[type[FakeServer]] = FakeServer
    plugin: ClassVar[object | None] = None
    reports_usage: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True

    def chat_requests_path(self) -> str:
        """The path the backend's chat requests go to: `chat_path`, else its wire format's (CHAT_PATHS)."""
        assert self.wire_format is not None, "a FakeServer runs only for a wire format"
        return self.chat_path or CHAT_PATHS[self.wire_format]

    def engine_options(self, server: FakeServer | None) -> dict[str, Any]:
        """register_engine() keyword arguments (other than backend and model) for an engine served by `server`.

        The default points `endpoint` at the server's OpenAI (`/v1`) or Ollama base URL. Override it
        to add an api_key or options; `server` is None when `wire_format` is None.
        """
        if server is None:
            return {}
        return {"endpoint": f"{server.base_url}/v1" if self.wire_format == "openai" else server.base_url}

    @pytest.fixture(autouse=True)
    def _fresh_state(self) -> Iterator[None]:
        """Each check starts with no engine registered, plugins loaded afresh (plus `plugin`) and no sampling warning remembered."""
        _reset()
        if self.plugin is not None:
            get_plugins().register(self.backend, self.plugin)
        yield
        _reset()

    @pytest.fixture
    def server(self) -> Iterator[FakeServer | None]:
        """A `server_class` serving `model`, or None when `wire_format` is None."""
        if self.wire_format is None:
            yield None
            return
        with self.server_class(models=(self.model,)) as fake:
            yield fake

    def register(self, server: FakeServer | None, **options: Any) -> EngineConfig[EngineOptions]:
        """Register the engine `conformance` on this backend, served by `server`, with extra `options`."""
        return register_engine(ENGINE, backend=self.backend, model=self.model, **{**self.engine_options(server), **options})

    @asynccontextmanager
    async def open_client(self, config: EngineConfig[EngineOptions]) -> AsyncIterator[Client]:
        """The engine's client made as a run makes it (ensure_running, then make_client); closed and stopped afterwards."""
        plugins = get_plugins()
        ensure = partial(plugins.call, config.backend, "ensure_running", config=config, run_dir=None, cancelled=threading.Event())
        resolved = config.model_copy(update={"endpoint": await asyncio.to_thread(ensure) or config.endpoint})
        client = plugins.call(config.backend, "make_client", config=resolved)
        assert client is not None, f"backend '{self.backend}': make_client returned None"
        try:
            yield client
        finally:
            await client.aclose()
            await asyncio.to_thread(plugins.call, config.backend, "stop_engine", config=config)

    async def complete(self, config: EngineConfig[EngineOptions], request: Request) -> Answer:
        """Open a client, send one request, close the client."""
        async with self.open_client(config) as client:
            return await client.complete(request)

    async def failures(self, config: EngineConfig[EngineOptions], count: int) -> list[BaseException | Answer]:
        """Send `count` requests one after the other; what each returned or raised."""
        outcomes: list[BaseException | Answer] = []
        async with self.open_client(config) as client:
            for index in range(count):
                try:
                    outcomes.append(await client.complete(request(Text, f"failure {index}")))
                except Exception as exc:
                    outcomes.append(exc)
        return outcomes


def _reset() -> None:
    clear_engines()
    reset_plugins()
    sampling_module._warned.clear()


def run(awaitable: Awaitable[T]) -> T:
    """Run `awaitable` on a fresh event loop; a check that hangs fails after HANG_GUARD seconds."""

    async def guarded() -> T:
        try:
            return await asyncio.wait_for(awaitable, HANG_GUARD)
        except asyncio.TimeoutError:
            raise AssertionError(f"the check did not finish within {HANG_GUARD:.0f} s (a hang)") from None

    return asyncio.run(guarded())


def request(model: type[BaseModel], prompt: str) -> Request:
    """A request for `model`'s JSON schema with `prompt` as the user message."""
    messages = [{"role": "system", "content": "Answer with JSON."}, {"role": "user", "content": prompt}]
    schema = model.model_json_schema()
    return Request(messages=messages, schema=schema, schema_name=schema_name(model), step_id="conformance", row_id="0", output_model=model)


def last_user_message(body: dict[str, Any]) -> str:
    content: str = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return content


def contains(node: Any, value: Any) -> bool:
    """Whether `value` appears anywhere in the JSON-like `node` (booleans never stand for numbers)."""
    if node == value and isinstance(node, bool) == isinstance(value, bool):
        return True
    if isinstance(node, dict):
        return any(contains(child, value) for child in node.values())
    if isinstance(node, list):
        return any(contains(child, value) for child in node)
    return False


def carries_schema(node: Any, model: type[BaseModel]) -> bool:
    """Whether the JSON-like `node` holds a JSON schema whose properties are exactly `model`'s fields (any strict form)."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict) and set(properties) == set(model.model_fields):
            return True
        return any(carries_schema(child, model) for child in node.values())
    if isinstance(node, list):
        return any(carries_schema(child, model) for child in node)
    return False
