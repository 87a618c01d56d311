"""Goal 5: one vllm engine over two replicas (each serving 16 at a time) reaches >= 85 % of twice one replica's
rate (best of two each); and with one of two replicas stopped a third of the way through (timed from the moment the
engine is ready), every row is answered."""

from __future__ import annotations

import contextlib
import threading

from chainette.events import EngineChanged, Event

from chains import LABEL, labelling
from harness import LATENCY, Figure, Outcome, answered_rate, full_rate, server

CAPACITY = 16
CONCURRENCY = 32


def measure(count: int) -> Outcome:
    """Rates over `count` rows on one replica and on two; rows answered when one replica goes away mid-run."""

    def rate(*urls: str) -> float:
        return full_rate(labelling("vllm", [f"{url}/v1" for url in urls], CONCURRENCY), LABEL, count)

    with server(LATENCY, CAPACITY) as first, server(LATENCY, CAPACITY) as second:
        one = max(rate(first) for _ in range(2))
        two = max(rate(first, second) for _ in range(2))
        with contextlib.ExitStack() as doomed:
            third = doomed.enter_context(server(LATENCY, CAPACITY))
            stopper = threading.Timer(count / two / 3, doomed.close)
            chain = labelling("vllm", [f"{first}/v1", f"{third}/v1"], CONCURRENCY)
            try:
                _, answered = answered_rate(chain, LABEL, count, reporter=lambda event: start_when_ready(event, stopper))
            finally:
                stopper.cancel()
                if stopper.ident is not None:
                    stopper.join()
            assert stopper.ident is not None, "the engine never reported ready: no replica was stopped"
    return Outcome(
        (
            Figure(
                f"5. two vLLM replicas vs 2 x one replica (capacity {CAPACITY} each)",
                two,
                2 * one,
                ">= 85% of linear scaling",
                two >= 0.85 * 2 * one,
            ),
            Figure("5. one of two replicas stopped mid-run: rows answered", answered, count, "every row", answered == count, unit="rows"),
        )
    )


def start_when_ready(event: Event, stopper: threading.Timer) -> None:
    """Start `stopper` once the engine is ready: the run has checked its endpoints and sends its requests."""
    if isinstance(event, EngineChanged) and event.state == "ready" and stopper.ident is None:
        stopper.start()
