"""A node's state on disk as the last session left it: whether it finished (its done marker, with its row
counts), and otherwise its files repaired after a crash (see chainette.run.appends for the write order this relies
on), with the input rows it already decided; and the errors file repaired likewise."""

from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path

from chainette.errors import ChainetteError
from chainette.execution.files import ErrorLog, NodeFiles
from chainette.execution.rowids import Decided, RowIds, as_decided
from chainette.execution.stopping import StopSignal
from chainette.frontier import commits, count_rows, heads
from chainette.nodes import INPUT_ID
from chainette.run.appends import Writer, encode_line, output_files, read_lines, write_atomically, write_lines_atomically
from chainette.run.rundir import RunDir


@dataclass(frozen=True)
class Counts:
    """A node's whole-run row counts."""

    ok: int = 0
    failed: int = 0
    filtered: int = 0
    rows_out: int = 0


@dataclass
class Reopened:
    """A node's files reopened for appending, the input rows it already decided, and its counts so far."""

    files: NodeFiles
    decided: Decided
    counts: Counts


class NodeState:
    """A node's frontier and done marker, where the run directory places them."""

    def __init__(self, run_dir: RunDir, node_id: str):
        self.run_dir = run_dir
        self.node_id = node_id
        self.frontier = run_dir.frontier(node_id)
        self.marker = run_dir.done_marker(node_id)

    def finished_counts(self) -> Counts | None:
        """The counts an earlier session recorded when it finished the node, or None if none did."""
        if not self.marker.exists():
            return None
        counts = json.loads(self.marker.read_text(encoding="utf-8"))
        if "rows_out" not in counts:  # a marker written before chainette counted them
            counts["rows_out"] = count_rows(self.frontier)
        return Counts(**counts)

    def mark_finished(self, counts: Counts) -> None:
        write_atomically(self.marker, json.dumps(counts.__dict__).encode())

    def reopen(self, writer: Writer, yield_output: bool, errors: ErrorLog, control: StopSignal) -> Reopened:
        """Repair the node's files, then open them; its rows in the errors file count as decided."""
        folder = self.run_dir.node_folder(self.node_id) if yield_output else None
        committed = recover_node(self.frontier, folder)
        failed = errors.failed.get(self.node_id, set())
        files = NodeFiles(writer, self.node_id, self.frontier, folder, committed.rows, errors, control)
        committed.sources.update(failed)
        return Reopened(files, as_decided(committed.sources), Counts(committed.passed, len(failed), committed.filtered, committed.rows))


def forget_finished(run_dir: RunDir, keep: str) -> None:
    """Remove every node's done marker but `keep`'s, so that --retry-errors visits those nodes again."""
    for marker in run_dir.done_markers():
        if marker.stem != keep:
            marker.unlink()


def forget_filtered(frontier: Path) -> None:
    """Drop the commits that passed nothing on from a frontier (so that --retry-errors decides those rows again)."""
    drop_partial_line(frontier)
    if frontier.exists():
        write_lines_atomically(frontier, (commit.encode() for commit in commits(frontier) if commit.rows))


def drop_partial_line(path: Path) -> None:
    """Cut a file that a killed run left mid-line back to its last complete line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        file.seek(-1, os.SEEK_END)
        if file.read(1) == b"\n":
            return
        file.seek(0)
        data = file.read()
        file.truncate(data.rfind(b"\n") + 1)


@dataclass
class Committed:
    """What a node's frontier held after recovery: the input rows it decided, how many it passed and filtered, rows it produced."""

    sources: RowIds
    passed: int = 0
    filtered: int = 0
    rows: int = 0


def recover_node(frontier: Path, outputs: Path | None) -> Committed:
    """Repair what a crash left of a node's files and return its commits: the frontier loses a half-written
    last line, the output folder every line after those its commits cover."""
    drop_partial_line(frontier)
    committed = Committed(RowIds())
    for count, source, _ in heads(frontier):  # the rows themselves are not decoded
        committed.sources.add(source)
        committed.rows += count
        if count:
            committed.passed += 1
        else:
            committed.filtered += 1
    if outputs is not None:
        truncate_outputs(outputs, committed.rows)
    return committed


def truncate_outputs(folder: Path, keep: int) -> None:
    """Keep the first `keep` lines of an output folder (across its numbered files) and drop the rest."""
    for path in output_files(folder):
        with open(path, "rb+") as file:
            size = 0
            for line in file:
                if keep == 0 or not line.endswith(b"\n"):
                    break
                keep -= 1
                size += len(line)
            file.truncate(size)
    if keep:
        raise ChainetteError(
            f"{folder} holds fewer output lines than its node committed: the run's files were changed by hand. "
            "Pass --overwrite to start afresh."
        )


def recover_errors(path: Path, *, keep_node: str | None = None) -> tuple[dict[str, set[str]], set[int]]:
    """Repair the errors file after a crash and return its committed rows by node, and the input positions
    (`row_index`) of the rows that failed after the input; with `keep_node`, first forget every error of the other
    nodes (so that --retry-errors runs those rows again)."""
    drop_partial_line(path)
    if keep_node is not None and path.exists():
        write_lines_atomically(path, (encode_line(e) for e in read_lines(path) if e["step_id"] == keep_node))
    failed: dict[str, set[str]] = {}
    failed_rows: set[int] = set()
    for error in read_lines(path):
        failed.setdefault(error["step_id"], set()).add(error["row_id"])
        if error["step_id"] != INPUT_ID:
            failed_rows.add(error["row_index"])
    return failed, failed_rows
