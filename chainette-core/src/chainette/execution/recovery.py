"""A node's state on disk as the last session left it: whether it finished (its done marker, with its row
counts), and otherwise its files repaired after a crash, with the input rows it already decided."""

from __future__ import annotations

from dataclasses import dataclass
import json

from chainette.execution.files import NodeFiles
from chainette.store import RunDir, Writer, recover_node, write_atomically


@dataclass(frozen=True)
class Counts:
    """A node's whole-run row counts."""

    ok: int = 0
    failed: int = 0
    filtered: int = 0


@dataclass
class Reopened:
    """A node's files reopened for appending, the input rows it already decided, and its counts so far."""

    files: NodeFiles
    decided: set[str]
    counts: Counts


class NodeState:
    """Where a node's frontier and done marker live in the run directory's state folder."""

    def __init__(self, run_dir: RunDir, node_id: str):
        self.run_dir = run_dir
        self.node_id = node_id
        self.frontier = run_dir.state / f"{node_id}.jsonl"
        self.marker = run_dir.state / f"{node_id}.done"

    def finished_counts(self) -> Counts | None:
        """The counts an earlier session recorded when it finished the node, or None if none did."""
        if not self.marker.exists():
            return None
        return Counts(**json.loads(self.marker.read_text(encoding="utf-8")))

    def mark_finished(self, counts: Counts) -> None:
        write_atomically(self.marker, json.dumps(counts.__dict__).encode())

    def reopen(self, writer: Writer, yield_output: bool, failed: set[str]) -> Reopened:
        """Repair the node's files, then open them; `failed` are its rows in the errors file."""
        folder = self.run_dir.node_folder(self.node_id) if yield_output else None
        committed = recover_node(self.frontier, folder)
        files = NodeFiles(writer, self.frontier, folder, committed.rows)
        return Reopened(files, committed.sources | failed, Counts(committed.passed, len(failed), committed.filtered))


def forget_finished(run_dir: RunDir, keep: str) -> None:
    """Remove every node's done marker but `keep`'s, so that --retry-errors visits those nodes again."""
    for marker in run_dir.state.glob("*.done"):
        if marker.stem != keep:
            marker.unlink()
