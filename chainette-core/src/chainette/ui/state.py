"""What every view of a running chain needs: per node counts, rates and ETA, and recent engine events."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import time
from typing import Any

from chainette.batch import FINISHED
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
    RunFinished,
    RunStarted,
)
from chainette.nodes import INPUT_ID


@dataclass
class NodeView:
    """One node as shown: its place in the tree, figures, and when this session started it."""

    id: str
    kind: str
    label: str
    total: int | None = None
    estimate: int | None = None  # while `total` is unknown: the input's row count, once that is known
    stats: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    finished: bool = False
    stopped: bool = False
    batches: dict[str, BatchChanged] = field(default_factory=dict)  # the last news of each of its batch jobs

    @property
    def waiting_batches(self) -> str | None:
        """`2 batches in_progress, 1200/5000 answered` while the node waits for batch jobs, else None."""
        running = [news for news in self.batches.values() if news.state not in FINISHED]
        if not running:
            return None
        states = ", ".join(sorted({news.state for news in running}))
        answered, total = sum(news.completed for news in running), sum(news.total for news in running)
        return f"{len(running)} batch{'es' if len(running) > 1 else ''} {states}, {answered}/{total} answered"

    @property
    def done(self) -> int:
        """Rows decided (answered, failed or filtered) over the whole run: never rows merely sent."""
        return int(self.stats.get("rows_in", 0))

    @property
    def in_flight(self) -> int:
        return int(self.stats.get("in_flight", 0))

    @property
    def in_flight_text(self) -> str:
        """`12 in flight` (`12 in flight, window 16` while the engine's adaptive window is narrowed), or "" for none."""
        if not self.in_flight:
            return ""
        window = self.stats.get("window")
        return f"{self.in_flight} in flight" + (f", window {window}" if window else "")

    def rate(self, now: float) -> float | None:
        """Rows per second this session: over the node's own time once it finished, else since it started."""
        rows: float = self.stats.get("session", {}).get("rows", 0)
        if self.finished:
            seconds: float = self.stats.get("session", {}).get("seconds") or 0.0
            return rows / seconds if seconds > 0 else None
        if self.started is None or now <= self.started:
            return None
        return rows / (now - self.started)

    def eta(self, now: float) -> float | None:
        """Seconds left at this session's rate, to the node's total, else to its estimate."""
        rate = self.rate(now)
        total = self.total if self.total is not None else self.estimate
        if self.finished or not rate or total is None:
            return None
        return max(total - self.done, 0) / rate


class RunState:
    """Folds the event stream into what the views render."""

    def __init__(self, log_lines: int = 6):
        self.chain = ""
        self.output_dir = ""
        self.resumed = False
        self.nodes: dict[str, NodeView] = {}
        self.log: deque[str] = deque(maxlen=log_lines)
        self.errors = 0
        self.finished: RunFinished | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.chain, self.output_dir, self.resumed = event.chain, event.output_dir, event.resumed
            self.nodes = {n["id"]: NodeView(n["id"], n["kind"], n["label"]) for n in event.nodes}
        elif isinstance(event, NodeStarted) and event.node in self.nodes:
            node = self.nodes[event.node]
            node.total, node.started = event.total, time.monotonic()
        elif isinstance(event, NodeCounted) and event.node in self.nodes:
            self._counted(event)
        elif isinstance(event, NodeFinished) and event.node in self.nodes:
            node = self.nodes[event.node]
            node.stats, node.finished, node.stopped = event.stats, True, not event.complete
            if node.total is None:
                node.total = node.done
        elif isinstance(event, Progress):
            for node_id, stats in event.nodes.items():
                if node_id in self.nodes and not self.nodes[node_id].finished:
                    self.nodes[node_id].stats = stats
        elif isinstance(event, RowFailed):
            self.errors += 1
        elif isinstance(event, EngineChanged):
            detail = f" ({event.detail})" if event.detail else ""
            self.log.append(f"{event.at[11:19]} engine {event.engine} {event.state}{detail}")
        elif isinstance(event, Notice):
            self.log.append(f"{event.at[11:19]} {event.message}")
        elif isinstance(event, BatchChanged):
            self._batch_news(event)
        elif isinstance(event, RunFinished):
            self.finished = event

    def _counted(self, event: NodeCounted) -> None:
        """A node's total is known; the input's is every other node's estimate until its own is."""
        self.nodes[event.node].total = event.total
        if event.node == INPUT_ID:
            for node in self.nodes.values():
                node.estimate = event.total

    def _batch_news(self, event: BatchChanged) -> None:
        """Keep a batch job's latest counts on its node; a new state also goes to the log."""
        batches = self.nodes[event.node].batches if event.node in self.nodes else {}
        before = batches.get(event.batch)
        if before is None or before.state != event.state:
            self.log.append(f"{event.at[11:19]} {batch_line(event)}")
        batches[event.batch] = event


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`, or `-` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def money(cost: float | None) -> str:
    return "-" if cost is None else f"${cost:.4f}"


def batch_line(event: BatchChanged) -> str:
    """`label batch batch_abc in_progress: 1200/5000 answered, 3 failed`."""
    failed = f", {event.failed} failed" if event.failed else ""
    return f"{event.node} batch {event.batch} {event.state}: {event.completed}/{event.total} answered{failed}"
