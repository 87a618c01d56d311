"""Periodic plain lines, for logs and terminals that are not interactive."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from chainette.events import (
    BatchChanged,
    EngineChanged,
    Event,
    NodeCounted,
    NodeFinished,
    NodeStarted,
    Notice,
    Progress,
    RowFailed,
    RunStarted,
)
from chainette.ui.state import RunState, batch_line, duration

MAX_ERROR_LINES = 20


class PlainLines:
    """One line per node start and finish, engine event and (the first few) row errors, and a progress line per
    running node every `every` seconds."""

    interval = 1.0

    def __init__(self, out: TextIO | None = None, every: float = 10.0):
        self.state = RunState()
        self.out = out or sys.stdout
        self.every = every
        self.last = 0.0
        self.errors_shown = 0
        self.batch_states: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        self.state(event)
        now = time.monotonic()
        if isinstance(event, RunStarted):
            self._line(event.at, f"run {event.chain} -> {event.output_dir}" + (" (resuming)" if event.resumed else ""))
        elif isinstance(event, NodeStarted):
            self._line(event.at, f"{event.node} started{_started_figures(event)}")
        elif isinstance(event, NodeCounted):
            self._line(event.at, f"{event.node} receives {event.total} rows")
        elif isinstance(event, NodeFinished):
            stats = event.stats
            verb = "finished" if event.complete else "stopped"
            self._line(event.at, f"{event.node} {verb}: {stats['ok']} ok, {stats['failed']} failed, {stats['filtered']} filtered")
        elif isinstance(event, EngineChanged):
            self._line(event.at, f"engine {event.engine} {event.state}" + (f" ({event.detail})" if event.detail else ""))
        elif isinstance(event, Notice):
            self._line(event.at, event.message)
        elif isinstance(event, BatchChanged) and self.batch_states.get(event.batch) != event.state:
            self.batch_states[event.batch] = event.state
            self._line(event.at, batch_line(event))
        elif isinstance(event, RowFailed) and self.errors_shown < MAX_ERROR_LINES:
            self.errors_shown += 1
            more = " (further errors only counted)" if self.errors_shown == MAX_ERROR_LINES else ""
            self._line(event.at, f"{event.node} row {event.row_id} failed: {event.error_type}: {event.message}{more}")
        elif isinstance(event, Progress) and now - self.last >= self.every:
            self.last = now
            for node in self.state.nodes.values():
                if node.started is not None and not node.finished:
                    rate = node.rate(now) or 0.0
                    done = f"{node.done} rows so far" if node.total is None else f"{node.done}/{node.total} rows"
                    in_flight = f" ({node.in_flight_text})" if node.in_flight else ""
                    failed = node.stats.get("failed", 0)
                    waiting = node.waiting_batches
                    self._line(
                        event.at,
                        f"{node.id} {done}{in_flight}, {rate:,.0f} rows/s, {failed} errors, "
                        + (waiting or f"ETA {duration(node.eta(now))}"),
                    )

    def _line(self, at: str, text: str) -> None:
        self.out.write(f"[{at[11:19]}] {text}\n")
        self.out.flush()


def _started_figures(event: NodeStarted) -> str:
    """` (500 rows, 300 done before)`: the rows the node receives, when known (not while an input streams), and those
    earlier sessions decided."""
    before = f"{event.done} done before" if event.done else ""
    figures = [f"{event.total} rows" if event.total is not None else "", before]
    shown = ", ".join(figure for figure in figures if figure)
    return f" ({shown})" if shown else ""
