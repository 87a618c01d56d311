"""The request policy on a virtual clock: rate limits, the shared 429 cool-down, retry limits."""

from __future__ import annotations

import asyncio

import pytest

from chainette import Answer, EngineError, Request, RetryableError, RowError, Usage, register_engine
import chainette.policy as policy
from chainette.policy import EngineGate, complete_with_retries


class VirtualClock:
    """Time that only moves when someone sleeps; every sleep yields to the loop once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch) -> VirtualClock:
    virtual = VirtualClock()
    monkeypatch.setattr(policy, "clock", virtual)
    monkeypatch.setattr(policy, "sleep", virtual.sleep)
    monkeypatch.setattr(policy.random, "uniform", lambda low, high: high)
    return virtual


class Recorder:
    """A client that answers after `script(n)` says so, recording the virtual time of each request."""

    def __init__(self, clock: VirtualClock, script=lambda n: None):
        self.clock = clock
        self.script = script
        self.times: list[float] = []

    async def complete(self, request: Request) -> Answer:
        self.times.append(self.clock.now)
        error = self.script(len(self.times))
        if error is not None:
            raise error
        return Answer('{"a": 1}', usage=Usage(100, 50))


def request(text: str = "x" * 400) -> Request:
    return Request([{"role": "user", "content": text}], {}, "M", {"max_tokens": 50})


async def send_all(client, gate, count: int) -> None:
    await asyncio.gather(*(complete_with_retries(client, request(), gate) for _ in range(count)))


async def test_requests_per_minute(clock):
    gate = EngineGate(register_engine("e", backend="fake", model="m", requests_per_minute=6).options)
    client = Recorder(clock)
    await send_all(client, gate, 9)
    assert client.times[:6] == [0.0] * 6, "a full bucket lets a burst through"
    assert client.times[6:] == pytest.approx([10.0, 20.0, 30.0]), "then one request every 10 s"


async def test_tokens_per_minute_uses_estimates_then_real_usage(clock):
    gate = EngineGate(register_engine("e", backend="fake", model="m", tokens_per_minute=600).options)
    client = Recorder(clock)
    await send_all(client, gate, 5)
    assert client.times[:4] == [0.0] * 4, "each request is estimated at 100 + 50 tokens"
    assert client.times[4] > 0.0
    assert gate.tokens.level <= gate.tokens.capacity


async def test_429_cools_down_the_whole_engine(clock):
    gate = EngineGate(register_engine("e", backend="fake", model="m", max_concurrency=1).options)
    client = Recorder(clock, lambda n: RetryableError("slow down", kind="http_429", retry_after=5) if n == 1 else None)
    await send_all(client, gate, 4)
    assert client.times[0] == 0.0
    assert min(client.times[1:]) >= 5.0, "no request of any row goes out during the cool-down"


async def test_retries_give_up_after_max_retries(clock):
    gate = EngineGate(register_engine("e", backend="fake", model="m", max_retries=3).options)
    client = Recorder(clock, lambda n: RetryableError("boom", kind="http_500"))
    with pytest.raises(RowError, match="gave up after 4 attempts") as excinfo:
        await complete_with_retries(client, request(), gate)
    assert excinfo.value.kind == "http_500"
    gaps = [b - a for a, b in zip(client.times, client.times[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] == pytest.approx(policy.BASE_DELAY), "exponential backoff"


async def test_retry_budget_bounds_total_waiting(clock):
    gate = EngineGate(register_engine("e", backend="fake", model="m", max_retries=10, retry_budget=50).options)
    client = Recorder(clock, lambda n: RetryableError("later", kind="http_503", retry_after=30))
    with pytest.raises(RowError, match="gave up after 2 attempts"):
        await complete_with_retries(client, request(), gate)
    assert clock.now <= 50


async def test_unreachable_endpoint_stops_the_engine(clock):
    gate = EngineGate(register_engine("e", backend="fake", model="m", max_retries=2).options)
    client = Recorder(clock, lambda n: RetryableError("cannot connect to http://127.0.0.1:9", kind="connection"))
    with pytest.raises(EngineError, match="cannot connect to http://127.0.0.1:9"):
        await complete_with_retries(client, request(), gate)
    assert len(client.times) == 3


def test_token_estimates_count_media_parts_not_their_number():
    from chainette.policy import MEDIA_TOKENS, estimate_tokens

    image = {"type": "media", "field": "photo", "reference": {"media": "image", "path": "/x.png"}}
    parts = [{"type": "text", "text": "a" * 400}, image, {"type": "text", "text": "b" * 40}]
    request = Request([{"role": "user", "content": parts}], {"type": "object"}, "x", {"max_tokens": 50})
    assert estimate_tokens(request) == 100 + MEDIA_TOKENS + 10 + 50


async def test_a_client_told_that_a_rate_limit_is_spent_holds_the_engines_next_requests():
    from chainette.engines import EngineOptions
    from chainette.policy import LIMIT_SPENT, clock

    class Client:
        async def complete(self, request):
            LIMIT_SPENT.get()(30.0)  # what chainette.http's clients do for an answer whose headers say so
            return Answer('{"a": 1}')

        async def aclose(self):
            pass

    gate = EngineGate(EngineOptions())
    await complete_with_retries(Client(), Request([{"role": "user", "content": "x"}], {}, "s"), gate)
    assert gate.resume_at > clock() + 25 and LIMIT_SPENT.get() is None
