"""Issue 25's first-row figure: in a chain of 2 steps on one fake server (50 ms, 64 in flight between the steps) over
10,000 rows, the first row written to the last step's output is to come within the first 5 % of the run (rows
stream between nodes; when a node waited for the one before to decide every row, it came about half way)."""

from __future__ import annotations

import time

from chainette.events import Event, Progress, RunFinished, RunStarted

from chains import SECOND, two_steps_on_one_server
from harness import IN_FLIGHT, LATENCY, Figure, Outcome, answered_rate, server

ROWS = 10_000
"""The rows of the chain the goal is stated for."""
SHARE = 0.05
"""The share of the whole run within which the first row is to come."""


class FirstRowClock:
    """A run's listener: the seconds from the run's start to the first row its step `last` answered (read in the
    progress snapshots, every `interval` seconds), and to the run's end."""

    interval = 0.01

    def __init__(self, last: str):
        self.last = last
        self.started: float | None = None
        self.first_row: float | None = None
        self.finished: float | None = None

    def __call__(self, event: Event) -> None:
        now = time.perf_counter()
        if isinstance(event, RunStarted):
            self.started = now
        elif isinstance(event, Progress) and self.first_row is None and event.nodes[self.last]["ok"] > 0:
            self.first_row = now
        elif isinstance(event, RunFinished):
            self.finished = now

    def seconds(self) -> tuple[float, float]:
        """Seconds to the first row of the last step (to the end when no snapshot saw one: a run shorter than a tick),
        and seconds of the whole run."""
        assert self.started is not None and self.finished is not None, "the run sent no RunStarted or RunFinished event"
        first_row = self.finished if self.first_row is None else self.first_row
        return first_row - self.started, self.finished - self.started


def measure(count: int = ROWS) -> Outcome:
    """Seconds to the first row through the chain over `count` rows, against the seconds of the whole run."""
    clock = FirstRowClock(SECOND)
    with server(LATENCY) as url:
        _, answered = answered_rate(two_steps_on_one_server(f"{url}/v1", IN_FLIGHT), SECOND, count, reporter=clock)
    assert answered == count, f"first row: {answered} of {count} rows answered"
    first_row, whole = clock.seconds()
    name = f"8. first row through 2 steps on one server ({LATENCY * 1000:.0f} ms, {IN_FLIGHT} in flight), {count:,} rows, vs the whole run"
    figure = Figure(name, first_row, whole, f"<= {SHARE} x", first_row <= SHARE * whole, unit="s")
    return Outcome((figure,))
