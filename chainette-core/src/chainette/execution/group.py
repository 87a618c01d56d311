"""Parallel groups: every branch reads the same rows, each tagged with the row it came from (`origin`); a
group whose branches have aliases then joins their last outputs back onto the rows, by origin, through an
on-disk index (no memory per row). A row reaches the group's output only if every joined branch produced it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from chainette.execution.context import keep
from chainette.frontier import Commit, Row, rows
from chainette.nodes import Parallel
from chainette.run.appends import write_lines_atomically
from chainette.run.scratch import ScratchIndex


def tag_rows(source: Path, tagged: Path) -> Path:
    """Copy `source` to `tagged` with each row's origin set to its own id; return `tagged`."""
    write_lines_atomically(tagged, (Commit(row.row_id, [replace(row, origin=row.row_id)]).encode() for row in rows(source)))
    return tagged


def join_branches(group: Parallel, source: Path, finals: list[Path], target: Path, kept: frozenset[str]) -> Path:
    """The group's output frontier: `source` itself when no branch is joined, else `target`, its rows with each
    alias's values (keeping the `kept` context entries)."""
    joined = [(branch.alias, final) for branch, final in zip(group.branches, finals, strict=True) if branch.alias]
    if not joined:
        return source
    with JoinIndex(target.with_suffix(".sqlite")) as index:
        for alias, final in joined:
            index.add(alias, rows(final))
        write_lines_atomically(target, _joined_rows(source, index, [alias for alias, _ in joined], kept))
    return target


def _joined_rows(source: Path, index: JoinIndex, aliases: list[str], kept: frozenset[str]) -> Iterator[bytes]:
    for row in rows(source):
        values = index.lookup(row.row_id)
        if all(alias in values for alias in aliases):
            ctx = keep({**row.ctx, **values}, kept, row.direct)
            yield Commit(row.row_id, [replace(row, ctx=ctx)]).encode()


class JoinIndex(ScratchIndex):
    """Branch results keyed by the row they came from."""

    def __init__(self, path: Path):
        super().__init__(path, ["joined (origin TEXT, alias TEXT, value BLOB)"])

    def add(self, alias: str, branch_rows: Iterable[Row]) -> None:
        values = ((row.origin, alias, orjson.dumps(row.ctx[row.direct])) for row in branch_rows)
        self.db.executemany("INSERT INTO joined VALUES (?, ?, ?)", values)
        self.db.execute("CREATE INDEX IF NOT EXISTS by_origin ON joined (origin)")

    def lookup(self, origin: str) -> dict[str, Any]:
        """Each alias's value for `origin`: the branch's output, or the list of them when the branch fanned out."""
        found: dict[str, list[Any]] = {}
        for alias, value in self.db.execute("SELECT alias, value FROM joined WHERE origin = ? ORDER BY rowid", (origin,)):
            found.setdefault(alias, []).append(orjson.loads(value))
        return {alias: values[0] if len(values) == 1 else values for alias, values in found.items()}
