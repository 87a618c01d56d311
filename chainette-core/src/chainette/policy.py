"""The one request policy every backend gets: admission (the engine's window of requests in flight, adaptive by default
(chainette.window), requests and tokens per minute, a shared cool-down after a 429), retries with exponential backoff and jitter, honouring Retry-After,
and the stop of a step whose first rows all fail with the same error (`SameErrorStop`).

`clock` and `sleep` are module attributes so that tests can run the policy on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
import random
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar

from chainette.client import Answer, Client, Request, Usage
from chainette.engines import EngineOptions
from chainette.errors import BackendError, EngineError, RetryableError, RowError, RunInterrupted
from chainette.stats import NodeStats, Spent
from chainette.window import Window

if TYPE_CHECKING:
    from chainette.telemetry import RequestTracer

BASE_DELAY = 0.5
MAX_DELAY = 30.0
SAME_ERROR_ROWS = 5
ANSWER_KINDS = frozenset({"validation", "truncated", "content_filter", "refusal"})
OVERLOAD_KINDS = frozenset({"http_429", "http_503", "http_529", "timeout"})  # answers that narrow an adaptive window
MEDIA_TOKENS = 1000  # what the rate limiter counts for an image, document or audio part before the answer says (a
# 1024-pixel image is about 800 tokens at OpenAI's high detail)
TEMPLATE_KIND = "template"  # the kind of a row's error when its prompt cannot be rendered
ROW_SPECIFIC = re.compile(r"\w*\d\w*")
clock = time.monotonic
sleep = asyncio.sleep
T = TypeVar("T")


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt + 1`; a server's Retry-After wins when given."""
    if retry_after is not None:
        return retry_after + random.uniform(0, BASE_DELAY)
    return min(MAX_DELAY, BASE_DELAY * 2.0**attempt) * random.uniform(0.5, 1.0)


class TokenBucket:
    """`per_minute` units refilled continuously; `take(n)` waits until n units are there."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = clock()

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        while True:
            now = clock()
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now
            if self.level >= amount:
                self.level -= amount
                return
            await sleep((amount - self.level) / self.rate)

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


LIMIT_SPENT: ContextVar[Callable[[float], None] | None] = ContextVar("chainette_limit_spent", default=None)
"""Within a request to a backend, what to tell when the provider's answer says one of its rate limits is spent: the
seconds until it resets (`chainette.http`'s clients do, from the headers of every answer)."""


class EngineGate:
    """Admission control shared by every request to one engine; once `close`d (the run is stopping), it sends none."""

    def __init__(self, options: EngineOptions, tracer: RequestTracer | None = None):
        self.options = options
        self.tracer = tracer  # OpenTelemetry's, when the run asked for it (chainette.telemetry)
        self.closed = False
        self.window = Window(options.max_concurrency, options.adaptive_concurrency)
        self.requests = TokenBucket(options.requests_per_minute) if options.requests_per_minute else None
        self.tokens = TokenBucket(options.tokens_per_minute) if options.tokens_per_minute else None
        self.limited = self.requests is not None or self.tokens is not None
        self.resume_at = 0.0

    async def admit(self, estimate: int) -> None:
        """Wait out a cool-down, then take one request and `estimate` tokens from the per-minute budgets."""
        while (wait := self.resume_at - clock()) > 0:
            await sleep(wait)
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(estimate)

    def settle(self, estimate: int, usage: Usage) -> None:
        """Correct the token budget once the real usage is known."""
        if self.tokens is not None and usage.total:
            self.tokens.give_back(estimate - usage.total)

    def close(self) -> None:
        """Send no more requests: those waiting for a slot, or to be retried, are not sent (the requests in flight finish)."""
        self.closed = True

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this engine for `seconds` (after a 429, or an answer saying a rate limit is spent)."""
        self.resume_at = max(self.resume_at, clock() + seconds)


def estimate_tokens(request: Request) -> int:
    """A rough token count for the rate limiter: four characters of text a token, MEDIA_TOKENS a media part, plus the
    answer's budget."""
    prompt = sum(_content_tokens(message["content"]) for message in request.messages)
    return prompt + int(request.sampling.get("max_tokens") or request.sampling.get("max_completion_tokens") or prompt)


def _content_tokens(content: str | list[dict[str, Any]]) -> int:
    if isinstance(content, str):
        return len(content) // 4
    return sum(len(part["text"]) // 4 if part["type"] == "text" else MEDIA_TOKENS for part in content)


async def complete_with_retries(client: Client, request: Request, gate: EngineGate, node: NodeStats | None = None) -> Answer:
    """Send `request` through the gate, retrying transient failures within the engine's retry limits.

    Every attempt, its retries and the tokens the server reported for it (a failed one's too) are added to
    the spending of `node` (the step asking), whose `in_flight` counts the attempt while it holds one of the
    engine's slots. Raises RowError when retries are spent, EngineError when the endpoint stays unreachable, or
    RunInterrupted when the gate closes before an attempt is sent.
    """
    node = node if node is not None else NodeStats("step")
    spent = node.session
    options = gate.options
    estimate = estimate_tokens(request) if gate.tokens is not None else 0
    started = clock()
    attempt = 0
    while True:
        if gate.limited or gate.resume_at:
            await gate.admit(estimate)
        try:
            answer = await _sent(client, request, gate, node)
        except RetryableError as exc:
            _count_usage(spent, exc.usage)
            delay = backoff_delay(attempt, exc.retry_after)
            if exc.kind == "http_429":
                gate.cool_down(delay)
            out_of_budget = clock() - started + delay > options.retry_budget
            if attempt >= options.max_retries or out_of_budget:
                detail = f"{exc} (gave up after {attempt + 1} attempts)"
                if exc.kind == "connection":
                    raise EngineError(detail, kind="unreachable") from None
                raise RowError(detail, kind=exc.kind, raw=exc.raw) from None
            await sleep(delay)
            attempt += 1
            spent.retries += 1
        except BackendError as exc:
            _count_usage(spent, exc.usage)
            raise
        else:
            _count_usage(spent, answer.usage)
            gate.settle(estimate, answer.usage)
            return answer


async def _sent(client: Client, request: Request, gate: EngineGate, node: NodeStats) -> Answer:
    """The client's answer to `request`, asked within the engine's window, which the answer adapts: counted among
    `node`'s requests, and in flight on it meanwhile. RunInterrupted, without sending it, once the gate is closed."""
    window, tracer = gate.window, gate.tracer
    number = window.take() or await window.enter()
    try:
        if gate.closed:
            raise RunInterrupted("the run is stopping: the request was not sent")
        node.session.requests += 1
        node.in_flight += 1
        span = tracer.started(request) if tracer is not None else None
        started = clock()
        hold = LIMIT_SPENT.set(gate.cool_down)
        try:
            answer = await client.complete(request)
        except BaseException as exc:
            if isinstance(exc, RetryableError) and exc.kind in OVERLOAD_KINDS:
                window.overloaded(number)
            if tracer is not None and span is not None:
                tracer.ended(span, clock() - started, None, exc)
            raise
        finally:
            LIMIT_SPENT.reset(hold)
            node.in_flight -= 1
        seconds = clock() - started
        window.answered(number, seconds)
        if tracer is not None and span is not None:
            tracer.ended(span, seconds, answer, None)
        return answer
    finally:
        window.leave()
        allowed = window.allowed
        node.window = allowed if allowed < window.ceiling else None


async def call_with_retries(call: Callable[[], Awaitable[T]], options: EngineOptions, spent: Spent) -> T:
    """`call()`, a call that is not a row's request (a batch job's upload, its status), retried with backoff while it
    fails transiently, up to the engine's max_retries (each retry counted in `spent`); then an EngineError: no row can
    go on without it."""
    for attempt in range(options.max_retries + 1):
        try:
            return await call()
        except RetryableError as exc:
            if attempt == options.max_retries:
                raise EngineError(f"{exc} (gave up after {attempt + 1} attempts)", kind=exc.kind) from None
            spent.retries += 1
            await sleep(backoff_delay(attempt, exc.retry_after))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _count_usage(spent: Spent, usage: Usage | None) -> None:
    if usage is not None:
        spent.add_usage(usage)


class SameErrorStop:
    """Watches one step's rows in a session: once its first `rows` decided rows all failed with the same error (a
    backend's, after its retries, or a prompt that cannot be rendered), `failed` returns the EngineError that stops
    the step: for a backend error the engine itself cannot serve it (the paragraph ends with the backend's `advice`,
    from its options' `same_error_advice`), for a render error its prompts do not fit its rows. A success, an error
    about the model's answer (ANSWER_KINDS) or a different error disarms it for the step."""

    def __init__(self, step: str, engine: str, backend: str, rows: int = SAME_ERROR_ROWS, advice: str = ""):
        self.step, self.engine, self.backend, self.rows, self.advice = step, engine, backend, rows, advice
        self.armed = True
        self.signature: tuple[str, str] | None = None
        self.count = 0
        self.stop: EngineError | None = None

    def succeeded(self) -> None:
        """A row was answered: the engine can serve the step."""
        self.armed = False

    def failed(self, exc: BackendError) -> EngineError | None:
        """Count a row's failure; the step's EngineError once the first rows all failed alike, and for every failure after."""
        if self.stop is not None or not self.armed:
            return self.stop
        signature = (exc.kind, same_error_key(str(exc)))
        if exc.kind in ANSWER_KINDS or (self.count and signature != self.signature):
            self.armed = False
            return None
        self.signature, self.count = signature, self.count + 1
        if self.count >= self.rows:
            explain = self._explain_template if exc.kind == TEMPLATE_KIND else self._explain
            self.stop = EngineError(explain(exc), kind="same_error")
        return self.stop

    def _explain(self, exc: BackendError) -> str:
        return (
            f"Step '{self.step}' stopped: its first {self.rows} rows all failed the same way on engine '{self.engine}' "
            f"({exc.kind}), so the engine itself cannot serve this step: {str(exc).rstrip('.')}. Check the engine's model "
            "name and endpoint, and that its server supports what the step asks for: structured output (response_format "
            f"with a JSON schema) and any reasoning or sampling option it sets (see the options of backend '{self.backend}'). "
            f"{self.advice + ' ' if self.advice else ''}{self._kept()} once the engine is fixed, "
            "run the same command again to resume, with --retry-errors to run those rows again too."
        )

    def _explain_template(self, exc: BackendError) -> str:
        return (
            f"Step '{self.step}' stopped: the prompts of its first {self.rows} rows all failed to render the same way: "
            f"{str(exc).rstrip('.')}. Check the names and fields its prompts read against what reaches the step (an apply "
            "without an output_model or a return annotation passes on whatever its function returns). "
            f"{self._kept()} the same command resumes the run as it is, while a fixed prompt is a changed chain: run that "
            "with --overwrite or into another output directory."
        )

    def _kept(self) -> str:
        return f"Those {self.rows} rows are in errors.jsonl and the step's other rows are left for later:"


def same_error_key(message: str) -> str:
    """`message` with its row-specific parts (numbers, ids: any word holding a digit) replaced by '#', for comparison."""
    return ROW_SPECIFIC.sub("#", message)
