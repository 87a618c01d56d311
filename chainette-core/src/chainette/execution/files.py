"""What a stage works with during one session: a node's files, opened for appending through the run's `Writer`
(its frontier, the commit log, and its output folder when it yields outputs), the run's errors file, the
node's figures, the stop signal, and the context entries its output rows keep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chainette.events import EventBus, RowFailed
from chainette.execution.stopping import StopSignal
from chainette.frontier import Row
from chainette.nodes import INPUT_ID
from chainette.run.appends import LineFile, OutputFolder, Writer
from chainette.secrets import redact_data
from chainette.stats import NodeStats


class NodeFiles:
    """A node's frontier, and its output folder (None when the node yields no output) holding `output_rows` lines already."""

    def __init__(self, writer: Writer, frontier: Path, outputs: Path | None, output_rows: int):
        self.frontier = LineFile(writer, frontier)
        self.outputs = OutputFolder(writer, outputs, output_rows) if outputs is not None else None

    def close(self) -> None:
        if self.outputs is not None:
            self.outputs.close()
        self.frontier.close()


class ErrorLog:
    """errors.jsonl: one line per failed row, cleared of the engines' secrets, each also announced as a RowFailed event.
    `failed_rows` gathers the input positions of the rows failed after the input (one per input row, however many
    of its fan-out children, samples or branches fail)."""

    def __init__(self, writer: Writer, path: Path, bus: EventBus, failed_rows: set[int]):
        self.file = LineFile(writer, path)
        self.bus = bus
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
    """The base of each node kind's stage: the node's files and figures, the errors file, the stop signal,
    and `kept`, the context entries its output rows keep (chainette.execution.context)."""

    files: NodeFiles
    stats: NodeStats
    errors: ErrorLog
    control: StopSignal
    kept: frozenset[str]
