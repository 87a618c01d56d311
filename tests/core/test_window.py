"""An engine's window of requests in flight: fixed, or adaptive (halved on overload once a round trip, widened by one a
round trip after, held while latency has risen), and never more in flight than it allows, waiters cancelled included."""

from __future__ import annotations

import asyncio
import collections
import itertools
import random

from pydantic import BaseModel
import pytest

from chainette import RetryableError, RowError, Step, register_engine
from chainette.chain import Chain
from chainette.client import Request
from chainette.policy import EngineGate, complete_with_retries
from chainette.stats import NodeStats
from chainette.testing import FakeServer
from chainette.window import Window


async def test_a_fixed_window_stays_at_its_ceiling():
    window = Window(4, adaptive=False)
    numbers = [await window.enter() for _ in range(4)]
    for number in numbers:
        window.overloaded(number)
    assert window.allowed == 4
    waiting = asyncio.ensure_future(window.enter())
    await asyncio.sleep(0)
    assert not waiting.done(), "a fifth request waits for room"
    window.leave()
    assert await waiting == 5 and window.in_flight == 4


async def test_overload_halves_the_window_once_a_round_trip():
    window = Window(16, adaptive=True)
    sent = [await window.enter() for _ in range(16)]
    for number in sent:  # a burst of 429s to requests all sent before the cut: one cut
        window.overloaded(number)
        window.leave()
    assert window.allowed == 8
    later = await window.enter()
    window.overloaded(later)
    window.leave()
    assert window.allowed == 4, "a request sent after the cut cuts again"
    for _ in range(10):
        window.overloaded(await window.enter())
        window.leave()
    assert window.allowed == 1, "never below one"


async def test_answers_widen_the_window_by_one_a_round_trip_up_to_its_ceiling():
    window = Window(8, adaptive=True)
    window.overloaded(await window.enter())
    window.leave()
    assert window.allowed == 4
    for _ in range(4):  # one round trip of a 4-wide window: about one more
        window.answered(await window.enter(), 1.0)
        window.leave()
    assert 4.9 < window.size < 5
    for _ in range(200):
        window.answered(await window.enter(), 1.0)
        window.leave()
    assert window.allowed == 8 and window.size == 8.0


async def pipeline(window: Window, latencies: list[float], flying: collections.deque[int]) -> list[float]:
    """Keep the window full, answering the oldest request in flight (`flying`) with each latency in turn: the window's
    size after each answer."""
    sizes = []
    for latency in latencies:
        while window.in_flight < window.allowed:
            flying.append(await window.enter())
        window.answered(flying.popleft(), latency)
        window.leave()
        sizes.append(window.size)
    return sizes


async def test_latency_risen_against_its_long_run_average_narrows_the_window_by_a_tenth_a_round_trip():
    """A server suddenly three times slower: the window loses a tenth a round trip while the recent latency is twice the
    long-run average, then widens again once that average has caught up (a lasting change, such as longer answers, does
    not shrink it for good); steady latency, however high, never narrows it."""
    window, flying = Window(64, adaptive=True), collections.deque[int]()
    assert set(await pipeline(window, [1.0] * 500, flying)) == {64.0}, "steady at 1 s with 64 in flight: a batching server's normal"
    sizes = await pipeline(window, [3.0] * 3000, flying)
    cuts = sum(1 for before, after in itertools.pairwise(sizes) if after < before)
    assert 1 <= cuts <= 2, f"a tenth once a round trip of ~64 answers while latency stayed risen ({cuts} cuts)"
    assert min(sizes) >= 64 * 0.9**2 and sizes[-1] == 64, "widened back once the long-run average had caught up"


async def test_waiters_enter_in_order_and_cancelled_ones_give_their_room_back():
    window = Window(2, adaptive=True)
    await window.enter()
    await window.enter()
    order: list[str] = []

    async def request(name: str) -> None:
        await window.enter()
        order.append(name)

    first, doomed, last = (asyncio.ensure_future(request(name)) for name in ("first", "doomed", "last"))
    await asyncio.sleep(0)
    doomed.cancel()  # cancelled while it waits
    window.leave()
    window.leave()
    await asyncio.gather(first, last)
    assert order == ["first", "last"] and window.in_flight == 2
    woken = asyncio.ensure_future(window.enter())
    await asyncio.sleep(0)
    window.leave()  # its room is taken for it ...
    woken.cancel()  # ... and it is cancelled before it runs: the room comes back
    with pytest.raises(asyncio.CancelledError):
        await woken
    assert window.in_flight == 1


async def test_never_more_in_flight_than_the_window_allows_under_random_answers():
    """Random overloads, answers, latencies and cancellations: never more in flight than the ceiling, never more than
    the window allowed when one was let in, and every room given back at the end."""
    rng = random.Random(7)
    window = Window(12, adaptive=True)
    excess = []
    in_flight = 0

    async def request() -> None:
        nonlocal in_flight
        number = await window.enter()
        in_flight += 1
        excess.append(in_flight - window.ceiling)
        try:
            await asyncio.sleep(rng.random() / 1000)
            if rng.random() < 0.1:
                window.overloaded(number)
            else:
                window.answered(number, rng.random())
        finally:
            in_flight -= 1
            window.leave()

    tasks = [asyncio.ensure_future(request()) for _ in range(400)]
    for task in rng.sample(tasks, 40):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert max(excess) <= 0 and len(excess) == 360 and window.in_flight == 0 and window.allowed < 12


class In(BaseModel):
    index: int


class Out(BaseModel):
    label: str


def _run_against(server: FakeServer, adaptive: bool, tmp_path, name: str) -> dict:
    register_engine(
        name,
        backend="vllm",
        model="fake-model",
        endpoint=f"{server.base_url}/v1",
        api_key="none",
        max_concurrency=16,
        adaptive_concurrency=adaptive,
        max_retries=20,
    )
    step = Step(id="s", input_model=In, output_model=Out, engine_name=name, user_prompt="Label {{index}}")
    result = Chain(name=name, steps=[step]).run([{"index": i} for i in range(200)], output_dir=tmp_path / name, cache=False)
    return result.stats["steps"]["s"]


def test_an_adaptive_engine_narrows_to_what_the_server_takes(tmp_path):
    """A server taking 4 requests at once and answering 429 (no Retry-After) beyond them: with a window of 16, a fixed
    engine is refused 12 requests of each of its rounds; an adaptive one narrows within a few round trips, so that its
    refusals stay a small share of the rows, and every row is answered."""
    pytest.importorskip("chainette_vllm")
    with FakeServer(latency=0.01, capacity=4, refuse_beyond=429) as server:
        figures = _run_against(server, True, tmp_path, "adaptive")
    assert figures["ok"] == 200 and figures["failed"] == 0
    assert server.refused == figures["retries"] < 60, (server.refused, figures)


async def test_policy_narrows_the_window_on_overload_answers_only():
    gate = EngineGate(register_engine("g", backend="fake", model="m", max_concurrency=8).options)
    request = Request([{"role": "user", "content": "hi"}], {"type": "object"}, "x")
    node = NodeStats("step")

    class Refusing:
        def __init__(self, kind: str):
            self.kind = kind

        async def complete(self, request: Request):
            raise RetryableError("no", kind=self.kind)

        async def aclose(self) -> None:
            return None

    gate.options = gate.options.model_copy(update={"max_retries": 0})
    with pytest.raises(RowError):
        await complete_with_retries(Refusing("http_500"), request, gate, node)
    assert gate.window.allowed == 8 and node.window is None, "a server error is not an overload"
    with pytest.raises(RowError):
        await complete_with_retries(Refusing("http_429"), request, gate, node)
    assert gate.window.allowed == 4 and node.window == 4


async def test_latency_jitter_and_a_young_average_never_narrow_the_window():
    """Answers that take milliseconds vary by multiples from one to the next: no cut for them, nor before the long-run
    average has seen enough answers (a step whose first requests hang must still send as many as its window allows)."""
    window, flying = Window(5, adaptive=True), collections.deque[int]()
    await pipeline(window, [0.0001, 0.0001, 0.0001, 0.01], flying)
    assert window.size == 5, "four answers: too few to judge latency by"
    await pipeline(window, [0.0001] * 200 + [0.01] * 50, flying)
    assert window.size == 5, "a hundred-fold rise of a millisecond is jitter"
