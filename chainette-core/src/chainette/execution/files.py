"""What a stage works with during one session: a node's files, opened for appending through the run's `Writer`
(its frontier, the commit log and what the next nodes read, and its output folder when it yields outputs), the
run's errors file, the node's figures, the stop signal, and the context entries its output rows keep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chainette.events import EventBus, RowFailed
from chainette.execution.feed import Feed
from chainette.execution.stopping import StopSignal
from chainette.frontier import Commit, Row
from chainette.nodes import INPUT_ID
from chainette.run.appends import LineFile, OutputFolder, Writer
from chainette.secrets import redact_data
from chainette.stats import NodeStats

Decided = Callable[[Row, list[Row]], None]
"""Told of each input row a node decides, with the rows it passed on from it (none when it filtered or failed it)."""


class NodeFiles:
    """A node's frontier and the feed the next nodes read it through, and its output folder (None when the node
    yields no output) holding `output_rows` lines already. Every input row the node decides goes through `commit`
    or `fail`, which also tell `decided` (a parallel group following its branches), when set."""

    def __init__(
        self, writer: Writer, node_id: str, frontier: Path, outputs: Path | None, output_rows: int, errors: ErrorLog, control: StopSignal
    ):
        self.node_id = node_id
        self.frontier = LineFile(writer, frontier)
        self.outputs = OutputFolder(writer, outputs, output_rows) if outputs is not None else None
        self.feed = Feed(frontier, self.frontier, control)
        self.errors = errors
        self.decided: Decided | None = None
        writer.flushed.append(self.feed.release)

    def commit(self, row: Row, children: list[Row], *, cached: bool = False, line: bytes | None = None) -> None:
        """Commit input row `row` as passing on `children` (filtered out when there are none; `cached`: answered from
        the response cache; `line`: the commit's line, when encoded already)."""
        self.feed.passed(children, self.frontier.commit(Commit(row.row_id, children, cached), line))
        if self.decided is not None:
            self.decided(row, children)

    def commit_lines(self, lines: bytes, rows: int) -> None:
        """Commit input rows by their commit lines, encoded already (passing on `rows` rows in all), for a node no
        reader follows while it runs and nothing is `decided` of (a Ray driver committing a block as it came)."""
        assert self.decided is None, "a parallel group follows its branches row by row: commit each"
        self.frontier.append_lines(lines)
        self.feed.advanced(rows, len(lines))

    def fail(self, row: Row, kind: str, message: str, raw: Any = None) -> None:
        """Send input row `row` to the errors file."""
        self.errors.record(row, self.node_id, kind, message, raw)
        if self.decided is not None:
            self.decided(row, [])

    def close(self, *, ended: bool = True) -> None:
        """Write out and close the files, and tell the readers that the node finished, when it `ended`: the readers of a
        node that failed (or was cancelled) are not told, since to them an end means every row came; they wait until
        the failure cancels them too."""
        if self.outputs is not None:
            self.outputs.close()
        self.frontier.close()
        if ended:
            self.feed.close()


class ErrorLog:
    """errors.jsonl: one line per failed row, cleared of the engines' secrets, each also announced as a RowFailed event.
    `failed` holds the ids of the rows earlier sessions failed, by node; `failed_rows` gathers the input positions of
    the rows failed after the input (one per input row, however many of its fan-out children, samples or branches fail)."""

    def __init__(self, writer: Writer, path: Path, bus: EventBus, failed: dict[str, set[str]], failed_rows: set[int]):
        self.file = LineFile(writer, path)
        self.bus = bus
        self.failed = failed
        self.failed_rows = failed_rows

    def record(self, row: Row, node_id: str, kind: str, message: str, raw: Any = None) -> None:
        """Write the failure of `row` at node `node_id`: its id and input position, the kind and reason, what was answered."""
        if self.bus.secrets:
            message, raw = redact_data([message, raw], self.bus.secrets)
        line = {"row_id": row.row_id, "row_index": row.index, "step_id": node_id, "error_type": kind, "message": message, "raw": raw}
        self.file.write(line)
        if node_id != INPUT_ID:
            self.failed_rows.add(row.index)
        self.bus.emit(RowFailed(node=node_id, row_id=row.row_id, error_type=kind, message=message))

    def close(self) -> None:
        self.file.close()


@dataclass
class Stage:
    """The base of each node kind's stage: the node's files and figures, the stop signal, and `kept`, the context
    entries its output rows keep (chainette.execution.context)."""

    files: NodeFiles
    stats: NodeStats
    control: StopSignal
    kept: frozenset[str]
