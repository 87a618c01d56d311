"""Issue 25's pipelining figures: a chain of 2 steps on 2 servers (200 ms, 16 slots each) against the same steps run
alone one after the other (to be <= 0.6), and 4 steps on 4 servers (to be <= 0.35). Rows stream between nodes; when
a node waited for the one before to decide every row, each was about 1.0."""

from __future__ import annotations

import contextlib

from chains import relay, relay_last
from harness import Figure, Outcome, full_rate, server

LATENCY = 0.2
SLOTS = 16
TARGETS = {2: 0.6, 4: 0.35}
"""Steps (one server each) and the share of the steps-alone time the chain is to take."""


def measure(count: int) -> Outcome:
    """Seconds of each chain over `count` rows, against the sum of its steps run alone on their servers."""
    return Outcome(tuple(relay_figure(steps, share, count) for steps, share in TARGETS.items()))


def relay_figure(steps: int, share: float, count: int) -> Figure:
    """The chain of `steps` steps, each on a server of its own, against those steps alone."""
    with contextlib.ExitStack() as servers:
        urls = [f"{servers.enter_context(server(LATENCY, SLOTS))}/v1" for _ in range(steps)]
        alone = sum(count / full_rate(relay([url], SLOTS), relay_last(1), count) for url in urls)
        chained = count / full_rate(relay(urls, SLOTS), relay_last(steps), count)
    name = f"7. {steps} steps on {steps} servers ({LATENCY * 1000:.0f} ms, {SLOTS} slots) vs each step alone, in turn"
    return Figure(name, chained, alone, f"<= {share} x", chained <= share * alone, unit="s")
