"""The flattened table: one line per row that made it through the chain, with the input's fields and every
top-level node's fields as `<node>.<field>` (join aliases likewise, and `<step>_reasoning` where a step
captured reasoning).

Rows carry only the context later nodes read (chainette.execution.context), so an entry the final rows do not
carry is gathered from the frontier that added it, into a scratch SQLite index: no memory per row. A final row
reads such an entry from its own id or, past a fan-out, from the nearest ancestor's (`3-1` then `3`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
from dataclasses import dataclass
from pathlib import Path
import shutil
from typing import Any

import orjson

from chainette.frontier import row_records
from chainette.run.appends import OutputFolder, Writer
from chainette.run.rundir import FLATTENED, RunDir
from chainette.run.scratch import ScratchIndex


@dataclass(frozen=True)
class Source:
    """A frontier and the context entries the flattened table takes from it, in column order."""

    frontier: Path
    entries: tuple[str, ...]


def write_flattened(run_dir: RunDir, final: Path, sources: list[Source]) -> None:
    """Write the `flattened` folder for the rows of the `final` frontier, replacing any earlier one. Entries of
    `final` itself come from its rows; those of the other sources through the index (built only when needed)."""
    folder = run_dir.node_folder(FLATTENED)
    shutil.rmtree(folder, ignore_errors=True)
    writer = OutputFolder(Writer(), folder)
    columns = [(key, source.frontier == final) for source in sources for key in source.entries]
    gathered = [(position, source) for position, source in enumerate(sources) if source.frontier != final]
    try:
        with contextlib.ExitStack() as stack:
            found: Iterator[tuple[int, dict[str, Any]]] = iter(())
            if gathered:
                index = stack.enter_context(EntryIndex(run_dir.scratch(FLATTENED)))
                for position, source in gathered:
                    index.add(position, source)
                found = index.gather(ancestors(row) for row in row_records(final))
            pending = next(found, None)
            for position, row in enumerate(row_records(final)):
                entries: dict[str, Any] = {}
                if pending is not None and pending[0] == position:
                    entries, pending = pending[1], next(found, None)
                line = {"row_id": row["row_id"], "row_index": row["index"]}
                ctx = row["ctx"]
                for key, own in columns:
                    where = ctx if own else entries
                    if key in where:
                        flatten(line, key, where[key])
                writer.write(line)
    finally:
        writer.close()


def flatten(line: dict[str, Any], key: str, value: Any) -> None:
    """Add entry `key` to `line`: an object's fields as `<key>.<field>`, anything else as itself."""
    if isinstance(value, dict):
        for field, item in value.items():
            line[f"{key}.{field}"] = item
    else:
        line[key] = value


def ancestors(row: dict[str, Any]) -> list[str]:
    """A frontier row's id and the ids of the rows it was fanned out from, nearest first ("3-1-0", "3-1", "3")."""
    return [row["row_id"], *row["up"]]


class EntryIndex(ScratchIndex):
    """Context entries by row id and source."""

    def __init__(self, path: Path):
        super().__init__(
            path,
            [
                "entry (row_id TEXT, source INTEGER, place INTEGER, key TEXT, value BLOB)",
                "wanted (position INTEGER, candidate TEXT)",
            ],
        )

    def add(self, position: int, source: Source) -> None:
        """Index the entries `source` provides; `position` orders the columns."""
        entries = (
            (row["row_id"], position, place, key, orjson.dumps(row["ctx"][key]))
            for row in row_records(source.frontier)
            for place, key in enumerate(source.entries)
            if key in row["ctx"]
        )
        self.db.executemany("INSERT INTO entry VALUES (?, ?, ?, ?, ?)", entries)

    def gather(self, lineages: Iterable[list[str]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """For each row (by its position in `lineages`, its id then its ancestors' ids) that has entries, those
        entries in column order, each from the nearest id that has it."""
        self.db.execute("CREATE INDEX by_row ON entry (row_id)")
        wanted = ((position, candidate) for position, lineage in enumerate(lineages) for candidate in lineage)
        self.db.executemany("INSERT INTO wanted VALUES (?, ?)", wanted)
        found = self.db.execute(
            "SELECT wanted.position, entry.source, entry.place, entry.key, entry.value"
            " FROM wanted CROSS JOIN entry ON entry.row_id = wanted.candidate ORDER BY wanted.rowid"
        )
        current: int | None = None
        entries: list[tuple[int, int, str, bytes]] = []
        for position, source, place, key, value in found:
            if current is not None and current != position:
                yield current, _in_place_order(entries)
                entries = []
            current = position
            entries.append((source, place, key, value))
        if current is not None:
            yield current, _in_place_order(entries)


def _in_place_order(entries: list[tuple[int, int, str, bytes]]) -> dict[str, Any]:
    """The entries by key in column order; where several ids of a lineage hold a key, the nearest's (listed first)."""
    chosen: dict[str, bytes] = {}
    for _, _, key, value in sorted(entries, key=lambda entry: entry[:2]):
        chosen.setdefault(key, value)
    return {key: orjson.loads(value) for key, value in chosen.items()}
