"""The backend conformance suite: one pytest check per item of the contract every backend keeps.

A backend's tests subclass `BackendConformance` and name the backend; pytest then runs every check:

    from chainette.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mybackend"
        wire_format = "openai"  # "ollama", or None for a backend with its own protocol

Backends speaking the OpenAI chat-completions or Ollama /api/chat format are pointed at a loopback
`FakeServer` (override `engine_options` to shape the register_engine() arguments); with
`wire_format = None` the checks that need the server are skipped and the rest run without one.
The checks are synchronous (each runs its own event loop), so pytest-asyncio is not needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from functools import partial
import gc
import inspect
import json
from pathlib import Path
import re
import threading
from typing import Any, ClassVar, Literal, TypeVar
import warnings

from pydantic import BaseModel
import pytest

from chainette import sampling as sampling_module
from chainette.chain import Chain
from chainette.client import Answer, Client, Request, Usage
from chainette.engines import EngineConfig, EngineOptions, clear_engines, register_engine
from chainette.errors import EngineError, RetryableError, RowError
from chainette.nodes import Step
from chainette.plugins import get_plugins, reset_plugins
from chainette.sampling import SamplingParams, UnsupportedSamplingWarning
from chainette.testing.server import FakeServer, Fault

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


class BackendConformance:
    """The checks; subclass it with `backend` set. Not collected itself (`__test__`); subclasses are.

    Attributes a subclass may set:
      backend: the backend's name (required);
      model: the model engines name (FakeServer serves it);
      wire_format: "openai" (FakeServer's /v1/chat/completions), "ollama" (/api/chat), or None;
      plugin: a module of hooks to register by hand when the backend is not installed (the entry
        point check is then skipped);
      reports_usage: without a server, whether answers must report some token usage;
      deterministic: without a server, whether the same request always gets the same answer (the
        concurrency check compares concurrent answers with sequential ones).
    """

    __test__ = False

    backend: ClassVar[str]
    model: ClassVar[str] = "fake-model"
    wire_format: ClassVar[Literal["openai", "ollama"] | None] = "openai"
    plugin: ClassVar[object | None] = None
    reports_usage: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__test__ = True

    def engine_options(self, server: FakeServer | None) -> dict[str, Any]:
        """register_engine() keyword arguments (other than backend and model) for an engine served by `server`.

        The default points `endpoint` at the server's OpenAI (`/v1`) or Ollama base URL. Override it
        to add an api_key or options; `server` is None when `wire_format` is None.
        """
        if server is None:
            return {}
        return {"endpoint": f"{server.base_url}/v1" if self.wire_format == "openai" else server.base_url}

    # ------------------------------------------------------------------ fixtures and helpers

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
        """A FakeServer serving `model`, or None when `wire_format` is None."""
        if self.wire_format is None:
            yield None
            return
        with FakeServer(models=(self.model,)) as fake:
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

    # ------------------------------------------------------------------ the contract

    def test_backend_is_found(self) -> None:
        """The backend resolves by its name, loads without error, implements make_client, and comes from its
        distribution's entry point (unless `plugin` registers it by hand)."""
        plugins = get_plugins()
        assert plugins.resolve(self.backend) == self.backend, f"'{self.backend}' is an alias; name the backend by its canonical name"
        info = plugins.found[self.backend]
        assert info.error is None, f"backend '{self.backend}' failed to load: {info.error}"
        assert "make_client" in info.hooks, f"backend '{self.backend}' implements no make_client hook"
        if self.plugin is None:
            assert info.distribution not in ("local", "?"), f"backend '{self.backend}' was not found through an entry point"
            assert info.version not in ("", "?"), f"backend '{self.backend}': its distribution has no version"

    def test_engine_options_is_an_engine_options_subclass(self, server: FakeServer | None) -> None:
        """engine_options (if implemented) returns a subclass of EngineOptions that forbids unknown keys; engines register with it."""
        options_model = get_plugins().call(self.backend, "engine_options")
        if options_model is not None:
            assert isinstance(options_model, type) and issubclass(options_model, EngineOptions), (
                f"engine_options returned {options_model!r}, not a subclass of chainette.EngineOptions"
            )
            assert options_model.model_config.get("extra") == "forbid", "the options model must keep extra='forbid' so typos are refused"
        config = self.register(server)
        assert isinstance(config.options, options_model or EngineOptions)

    def test_make_client_returns_an_async_client(self, server: FakeServer | None) -> None:
        """make_client returns an object with `async complete(request)` and `async aclose()`."""

        async def check() -> None:
            async with self.open_client(self.register(server)) as client:
                assert isinstance(client, Client), f"{type(client).__name__} lacks complete() or aclose()"
                assert inspect.iscoroutinefunction(client.complete), "complete() must be `async def`"
                assert inspect.iscoroutinefunction(client.aclose), "aclose() must be `async def`"

        run(check())

    def test_structured_output_through_a_chain(self, server: FakeServer | None, tmp_path: Path) -> None:
        """A real Chain run gives every row an answer valid for the output model; with a server, every request
        went to the declared chat endpoint and carried the output model's JSON schema."""
        self.register(server)
        step = Step(id="verdict", input_model=Text, output_model=Verdict, engine_name=ENGINE, user_prompt="Judge this: {{text}}")
        rows = [{"text": f"row number {index}"} for index in range(4)]
        result = Chain(name="conformance", steps=[step]).run(rows, output_dir=tmp_path / "run", progress=False)
        assert result.errors == [], f"rows failed: {result.errors}"
        verdicts = result["verdict"]
        assert len(verdicts) == len(rows) and all(isinstance(v, Verdict) for v in verdicts)
        if server is None:
            return
        assert self.wire_format is not None, "a FakeServer runs only for a wire format"
        sent = [r for r in server.requests if r["path"] in CHAT_PATHS.values()]
        assert {r["path"] for r in sent} == {CHAT_PATHS[self.wire_format]}, f"requests went to {sorted({r['path'] for r in sent})}"
        for record in sent:
            assert carries_schema(record["body"], Verdict), f"a request did not carry the output schema: {record['body']}"

    def test_sampling_fields_reach_the_wire_or_warn(self, server: FakeServer | None) -> None:
        """translate_sampling (or the core's default without it) returns a dict holding SamplingParams.extra; each
        sampling field set either reaches the wire (the translated dict without a server) or raises an
        UnsupportedSamplingWarning naming it."""
        config = self.register(server)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wire = sampling_module.translate(config, SAMPLING)
        assert isinstance(wire, dict), f"translate_sampling returned {wire!r}, not a dict"
        assert EXTRA.items() <= wire.items(), f"SamplingParams.extra {EXTRA} is not merged into {wire} (map_sampling does it)"
        sent: Any = wire
        if server is not None:
            run(self.complete(config, replace(request(Text, "sampling"), sampling=wire)))
            sent = server.chat_requests()[-1]
            assert contains(sent, "passed-through"), f"SamplingParams.extra did not reach the wire: {sent}"
        warned = " ".join(str(w.message) for w in caught if issubclass(w.category, UnsupportedSamplingWarning))
        for name in SamplingParams.model_fields.keys() - {"extra"}:
            value = getattr(SAMPLING, name)
            assert contains(sent, value) or re.search(rf"\b{name}\b", warned), (
                f"sampling field {name}={value!r} was silently dropped: it is not on the wire ({sent}) and no "
                "UnsupportedSamplingWarning names it (use chainette.sampling.map_sampling)"
            )

    def test_usage_is_reported(self, server: FakeServer | None) -> None:
        """complete() returns an Answer whose usage holds non-negative ints: the server's counts when it reports them."""
        answer = run(self.complete(self.register(server), request(Text, "usage")))
        assert isinstance(answer, Answer) and isinstance(answer.text, str), f"complete() returned {answer!r}, not an Answer"
        usage = answer.usage
        assert isinstance(usage, Usage)
        counts = (usage.input_tokens, usage.output_tokens)
        assert all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts), f"usage {counts} is not two ints >= 0"
        if server is not None:
            assert counts == SERVER_USAGE, f"usage {counts}: the server reported (input, output) = {SERVER_USAGE}"
        elif self.reports_usage:
            assert sum(counts) > 0, "usage is 0 (set reports_usage = False if the backend cannot count tokens)"

    def test_transient_statuses_are_retryable(self, server: FakeServer | None) -> None:
        """429 (its Retry-After kept as retry_after), 500 and 503 raise RetryableError; the client does not retry by itself."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(status=429, retry_after=7), Fault(status=500), Fault(status=503))
        outcomes = run(self.failures(self.register(server), 3))
        for status, outcome in zip((429, 500, 503), outcomes, strict=True):
            assert isinstance(outcome, RetryableError), f"HTTP {status} gave {outcome!r}, not a RetryableError"
            if status == 429:
                assert outcome.retry_after == 7, f"Retry-After: 7 gave retry_after={outcome.retry_after!r}"
        assert len(server.chat_requests()) == 3, "the client retried by itself; leave retries to the core"

    def test_bad_request_is_a_row_error(self, server: FakeServer | None) -> None:
        """HTTP 400 raises RowError: that row fails, the run goes on."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(status=400))
        [outcome] = run(self.failures(self.register(server), 1))
        assert isinstance(outcome, RowError), f"HTTP 400 gave {outcome!r}, not a RowError"

    def test_authentication_failure_is_an_engine_error(self, server: FakeServer | None) -> None:
        """HTTP 401 raises EngineError: no row can succeed, the run stops."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(status=401))
        [outcome] = run(self.failures(self.register(server), 1))
        assert isinstance(outcome, EngineError), f"HTTP 401 gave {outcome!r}, not an EngineError"

    def test_refused_connection_is_retryable(self) -> None:
        """A server that went away (connection refused) raises RetryableError with kind "connection"."""
        if self.wire_format is None:
            pytest.skip(NO_SERVER)

        async def check() -> BaseException | Answer:
            with FakeServer(models=(self.model,)) as doomed:
                async with self.open_client(self.register(doomed)) as client:
                    await asyncio.to_thread(doomed.stop)
                    try:
                        return await client.complete(request(Text, "anyone there?"))
                    except Exception as exc:
                        return exc

        outcome = run(check())
        assert isinstance(outcome, RetryableError), f"a refused connection gave {outcome!r}, not a RetryableError"
        assert outcome.kind == "connection", f"a refused connection has kind {outcome.kind!r}; the core needs 'connection'"

    def test_timeout_is_retryable(self, server: FakeServer | None) -> None:
        """A request that outlasts the engine's `timeout` option raises RetryableError."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(hang=0.6, status=400))  # a client that waits it out gets a RowError
        [outcome] = run(self.failures(self.register(server, timeout=0.1), 1))
        assert isinstance(outcome, RetryableError), f"a request past the timeout gave {outcome!r}, not a RetryableError"

    def test_concurrent_calls_get_their_own_answers(self, server: FakeServer | None) -> None:
        """Many concurrent complete() calls on one client each return the answer to their own request."""
        requests = [request(Text, f"marker-{index}") for index in range(CONCURRENT)]
        if server is not None:
            server.latency = 0.01
            server.respond = lambda body: json.dumps({"text": last_user_message(body).split()[-1]})

        async def answers() -> tuple[list[Answer], list[Answer]]:
            async with self.open_client(self.register(server)) as client:
                together = await asyncio.gather(*(client.complete(r) for r in requests))
                one_by_one = [await client.complete(r) for r in requests] if server is None and self.deterministic else []
                return list(together), one_by_one

        together, one_by_one = run(answers())
        assert len(together) == CONCURRENT and all(isinstance(a, Answer) for a in together)
        if server is not None:
            got = [Text.model_validate_json(a.text).text for a in together]
            assert got == [f"marker-{index}" for index in range(CONCURRENT)], f"answers are misaligned: {got}"
        elif one_by_one:
            assert [a.text for a in together] == [a.text for a in one_by_one], "concurrent answers differ from sequential ones"

    def test_cancellation_leaves_the_client_usable(self, server: FakeServer | None) -> None:
        """Cancelling a task awaiting complete() ends it promptly (no hang), and the client answers the next request."""

        async def check() -> Answer:
            async with self.open_client(self.register(server)) as client:
                if server is not None:
                    server.fail_next(Fault(hang=0.5, status=400))
                task = asyncio.ensure_future(client.complete(request(Text, "to be cancelled")))
                if server is not None:
                    while server.in_flight == 0 and not task.done():
                        await asyncio.sleep(0.01)
                else:
                    await asyncio.sleep(0)
                task.cancel()
                if server is not None:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    with suppress(asyncio.CancelledError):
                        await task
                return await client.complete(request(Text, "after the cancellation"))

        answer = run(check())
        Text.model_validate_json(answer.text)

    def test_aclose_releases_everything(self, server: FakeServer | None) -> None:
        """aclose() after some requests succeeds and leaves nothing open: no ResourceWarning once the client is gone."""
        config = self.register(server)
        gc.collect()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(self.complete(config, request(Text, "close me")))
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaks, f"resources left open after aclose(): {leaks}"


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
    return Request(messages=messages, schema=model.model_json_schema(), schema_name=model.__name__, step_id="conformance", row_id="0")


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
