"""A run's figures: rows decided per node (from the files, so true after any crash), what each session
spent (requests, retries, repairs, tokens, seconds), and cost.

Row counts cover the whole run. Spending is kept per session in `.chainette/sessions.json`,
rewritten whole about once a second and when the session ends, so that a resumed run reports
totals across sessions; a SIGKILL loses at most the last second of a session's spending.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
import json
from pathlib import Path
import time
from typing import Any

from chainette.client import Usage
from chainette.nodes import INPUT_ID
from chainette.pricing import Price, cost
from chainette.run.appends import write_atomically


@dataclass
class Spent:
    """What one session did for a node: rows it decided, requests it sent (retries and repair requests among
    them), tokens the server counted for them (failed requests too), and seconds; rows answered from the response
    cache without a request (`cached`), and the tokens the cached answers cost when they were first requested
    (`saved_*`). Tokens are counted by kind, as `chainette.client.Usage` counts them."""

    rows: int = 0
    requests: int = 0
    retries: int = 0
    repairs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    seconds: float = 0.0
    cached: int = 0
    saved_input_tokens: int = 0
    saved_output_tokens: int = 0
    saved_cache_read_tokens: int = 0
    saved_cache_write_tokens: int = 0

    def add_usage(self, usage: Usage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cache_write_tokens += usage.cache_write_tokens

    def add_saved(self, usage: Usage) -> None:
        self.saved_input_tokens += usage.input_tokens
        self.saved_output_tokens += usage.output_tokens
        self.saved_cache_read_tokens += usage.cache_read_tokens
        self.saved_cache_write_tokens += usage.cache_write_tokens

    @property
    def saved(self) -> Usage:
        """The tokens the answers taken from the response cache cost when they were first requested."""
        return Usage(self.saved_input_tokens, self.saved_output_tokens, self.saved_cache_read_tokens, self.saved_cache_write_tokens)

    def __add__(self, other: Spent) -> Spent:
        return Spent(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(Spent)})


@dataclass
class NodeStats:
    """One node's figures over the whole run: of the rows it received, those it passed on (`ok`), failed and
    filtered out; the rows it passed on to the next node (`rows_out`: more than `ok` where it fans a row out or
    asks several samples); what is in flight now (a step's requests sent and not yet answered, a batch step's
    lines in open batches, the row an apply works on); and what this session and the earlier ones spent."""

    kind: str
    ok: int = 0
    failed: int = 0
    filtered: int = 0
    rows_out: int = 0
    in_flight: int = 0
    window: int | None = None  # a step's engine's adaptive window while narrowed below max_concurrency (None: not narrowed)
    session: Spent = field(default_factory=Spent)
    earlier: Spent = field(default_factory=Spent)

    @property
    def rows_in(self) -> int:
        """Rows decided so far (answered, failed or filtered): not those in flight."""
        return self.ok + self.failed + self.filtered

    def snapshot(self, price: Price | None) -> dict[str, Any]:
        """The node's figures as run.json and the views show them: whole-run totals, plus this session's spending."""
        total = self.earlier + self.session
        figures = {
            "kind": self.kind,
            "rows_in": self.rows_in,
            "ok": self.ok,
            "failed": self.failed,
            "filtered": self.filtered,
            "rows_out": self.rows_out,
        }
        figures.update({name: value for name, value in asdict(total).items() if name != "rows"})
        figures["seconds"] = round(total.seconds, 3)
        step = self.kind == "step"
        figures["cost_usd"] = cost(price, total) if step else None
        figures["saved_usd"] = cost(price, total.saved) if step else None
        figures["in_flight"] = self.in_flight
        figures["window"] = self.window
        figures["session"] = asdict(self.session)
        return figures


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SessionLog:
    """The sessions of one run directory: earlier ones read back on resume, this one saved as it goes."""

    def __init__(self, path: Path, *, resumed: bool):
        self.path = path
        self.earlier = self._load() if resumed else []
        self.number = len(self.earlier) + 1
        self.started_at = now_iso()
        self._clock = time.perf_counter()
        self._saved_at = 0.0

    def _load(self) -> list[dict[str, Any]]:
        try:
            sessions = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        for session in sessions:
            if session["status"] == "running":
                session["status"] = "killed"
        return list(sessions)

    def earlier_spent(self, node_id: str) -> Spent:
        """What the earlier sessions spent on `node_id`, added up."""
        total = Spent()
        for session in self.earlier:
            if node_id in session["nodes"]:
                total = total + Spent(**session["nodes"][node_id])
        return total

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._clock

    def records(self, stats: dict[str, NodeStats], status: str) -> list[dict[str, Any]]:
        """Every session as run.json lists them, this one with `status`."""
        this = {
            "session": self.number,
            "status": status,
            "started_at": self.started_at,
            "finished_at": now_iso(),
            "seconds": round(self.seconds, 3),
            "nodes": {node_id: {**asdict(node.session), "seconds": round(node.session.seconds, 3)} for node_id, node in stats.items()},
        }
        return [*self.earlier, this]

    def save(self, stats: dict[str, NodeStats], status: str = "running", *, every: float = 0.0) -> list[dict[str, Any]]:
        """Rewrite the sessions file with this session's figures (not more often than `every` seconds); return what it holds."""
        records = self.records(stats, status)
        now = time.monotonic()
        if now - self._saved_at >= every:
            self._saved_at = now
            write_atomically(self.path, json.dumps(records).encode())
        return records


def run_figures(stats: dict[str, NodeStats], prices: dict[str, Price | None], rows_failed: int) -> dict[str, Any]:
    """run.json's figures: input rows, the input rows that failed at some node (`rows_failed`: each counted once,
    however many of its error lines there are), and per node rows, requests, tokens, cost and what the cache saved
    (None when the price is unknown), time.
    `stats` holds the input's figures under INPUT_ID; `prices` the price of each step's engine."""
    steps = {node_id: node.snapshot(prices.get(node_id)) for node_id, node in stats.items() if node_id != INPUT_ID}
    source = stats[INPUT_ID]
    return {
        "input": {"rows": source.rows_in, "invalid": source.failed},
        "rows_failed": rows_failed,
        "steps": steps,
        "cost_usd": _total(steps, "cost_usd"),
        "saved_usd": _total(steps, "saved_usd"),
    }


def _total(steps: dict[str, dict[str, Any]], figure: str) -> float | None:
    """The sum of the steps' `figure` (a USD amount) over the priced steps; None when none is priced."""
    amounts = [node[figure] for node in steps.values() if node[figure] is not None]
    return round(sum(amounts), 6) if amounts else None
