"""The one request policy every backend gets: admission (concurrency, requests and tokens per minute,
a shared cool-down after a 429) and retries with exponential backoff and jitter, honouring Retry-After.

`clock` and `sleep` are module attributes so that tests can run the policy on a virtual clock."""

from __future__ import annotations

import asyncio
import random
import time

from chainette.client import Answer, Client, Request, Usage
from chainette.engines import EngineOptions
from chainette.errors import BackendError, EngineError, RetryableError, RowError
from chainette.stats import Spent

BASE_DELAY = 0.5
MAX_DELAY = 30.0
clock = time.monotonic
sleep = asyncio.sleep


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


class EngineGate:
    """Admission control shared by every request to one engine."""

    def __init__(self, options: EngineOptions):
        self.options = options
        self.slots = asyncio.Semaphore(options.max_concurrency)
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
        if self.tokens is not None and usage.input_tokens + usage.output_tokens:
            self.tokens.give_back(estimate - usage.input_tokens - usage.output_tokens)

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this engine for `seconds` (after a 429)."""
        self.resume_at = max(self.resume_at, clock() + seconds)


def estimate_tokens(request: Request) -> int:
    """A rough token count for the rate limiter: four characters a token, plus the answer's budget."""
    prompt = sum(len(message["content"]) for message in request.messages) // 4
    return prompt + int(request.sampling.get("max_tokens") or request.sampling.get("max_completion_tokens") or prompt)


async def complete_with_retries(client: Client, request: Request, gate: EngineGate, spent: Spent | None = None) -> Answer:
    """Send `request` through the gate, retrying transient failures within the engine's retry limits.

    Every attempt, its retries and the tokens the server reported for it (a failed one's too) are
    added to `spent`. Raises RowError when retries are spent, or EngineError when the endpoint stays unreachable.
    """
    spent = spent if spent is not None else Spent()
    options = gate.options
    estimate = estimate_tokens(request) if gate.tokens is not None else 0
    started = clock()
    attempt = 0
    while True:
        if gate.limited or gate.resume_at:
            await gate.admit(estimate)
        spent.requests += 1
        try:
            async with gate.slots:
                answer = await client.complete(request)
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


def _count_usage(spent: Spent, usage: Usage | None) -> None:
    if usage is not None:
        spent.add_usage(usage.input_tokens, usage.output_tokens)
