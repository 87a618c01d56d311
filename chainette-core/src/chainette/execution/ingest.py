"""The input stage: each raw input row, parsed into the chain's input model, becomes a row of the first
frontier; a row that does not parse goes to the errors file. A row's id is its position in the input ("0",
"1", …) or, with `id_column`, the user's own id from that column, checked unique over the whole input."""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterable, Iterator
import contextlib
import itertools
from pathlib import Path
import re
from typing import Any

from pydantic import BaseModel

from chainette import inputs
from chainette.errors import InputError
from chainette.execution.files import NodeFiles
from chainette.frontier import Row
from chainette.nodes import INPUT_ID
from chainette.run.scratch import ScratchIndex
from chainette.stats import NodeStats

CHILD_SUFFIX = re.compile(r"-\d+$")
CHILD_SUFFIXES = re.compile(r"(?:-\d+)+")
YIELD_EVERY = 128
"""Input rows read before letting the loop flush files and the nodes after take them. Half a step's look-ahead: a first
step as fast as the reading (answered from the cache) keeps up, and takes its rows from the feed's memory rather than
reading them back from the file (at 256, a step using the cache fell up to 15,000 rows behind on the fake backend)."""
UNIQUE = "Row ids must be unique: fix the input, or leave out --id-column (id_column=) to number the rows instead."


async def ingest(
    raw_rows: Iterable[inputs.RawRow],
    model: type[BaseModel] | None,
    decided: Container[str],
    files: NodeFiles,
    stats: NodeStats,
    id_column: str | None = None,
    limit: int | None = None,
) -> bool:
    """Commit every input row not in `decided` to the input frontier (or to the errors file), or only those before
    position `limit`, letting the nodes after it work meanwhile; InputError for an id that appears twice. A row's
    position is its place in `raw_rows`, or its own (rows read apart from the rest of the input: a plan's sample, a
    block). True when the limit left rows unread."""
    with contextlib.ExitStack() as stack:
        seen = stack.enter_context(SeenIds(files.frontier.path.with_name("ids.sqlite"))) if id_column else None
        numbered = not id_column and bool(decided)  # a resume whose rows are numbered: skip those decided unread
        for number, raw in enumerate(raw_rows):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            index = number if raw.position is None else raw.position
            if limit is not None and index >= limit:
                return True
            if numbered and str(index) in decided:
                continue
            row_id, value = identify(raw, index, id_column)
            if seen is not None:
                seen.claim(row_id, raw.where, id_column or "")
            if row_id in decided:
                continue
            stats.session.rows += 1
            try:
                if isinstance(value, ValueError):
                    raise value
                data = inputs.validate(raw, value, model)
            except ValueError as exc:
                stats.failed += 1
                text = raw.value.rstrip("\n") if isinstance(raw.value, str) else None
                files.fail(Row(row_id, {}, INPUT_ID, index=index), "invalid_input", str(exc), text)
                continue
            stats.ok += 1
            stats.rows_out += 1
            row = Row(row_id, {INPUT_ID: data}, INPUT_ID, index=index)
            files.commit(row, [row])
    return False


def identify(raw: inputs.RawRow, index: int, id_column: str | None) -> tuple[str, dict[str, Any] | ValueError]:
    """The row's id, and its decoded object or why it cannot be read (a row with no usable id is named by where it is)."""
    try:
        value = inputs.decode(raw)
        return (inputs.row_id_of(raw, value, id_column) if id_column else str(index)), value
    except ValueError as exc:
        return (raw.where if id_column else str(index)), exc


class SeenIds(ScratchIndex):
    """The ids read so far in this pass over the input, with where each was read. Fan-out children are named
    `<id>-<n>`, so an id that is another one followed by `-<number>` (`a` and `a-0`) is refused too."""

    def __init__(self, path: Path):
        super().__init__(path, ["seen (row_id TEXT PRIMARY KEY, place TEXT) WITHOUT ROWID"])

    def claim(self, row_id: str, where: str, column: str) -> None:
        """Note `row_id`, read at `where`; InputError when it was read before, or when it or an earlier id could
        be the other's fan-out child."""
        clash = self._place(row_id)
        if clash is not None:
            raise InputError(f"{where}: the id '{row_id}' (column '{column}') was already used at {clash}. {UNIQUE}")
        related = next(itertools.chain(self._stems(row_id), self._children(row_id)), None)
        if related is not None:
            other, place = related
            raise InputError(
                f"{where}: the ids '{row_id}' and '{other}' (column '{column}', {place}) differ only by a '-<number>' ending, "
                f"which is how chainette names the rows an apply fans out. {UNIQUE}"
            )
        self.db.execute("INSERT INTO seen VALUES (?, ?)", (row_id, where))

    def _place(self, row_id: str) -> str | None:
        found = self.db.execute("SELECT place FROM seen WHERE row_id = ?", (row_id,)).fetchone()
        return None if found is None else str(found[0])

    def _stems(self, row_id: str) -> Iterator[tuple[str, str]]:
        """Earlier ids that `row_id` would be a fan-out child of."""
        stem = row_id
        while (cut := CHILD_SUFFIX.search(stem)) is not None:
            stem = stem[: cut.start()]
            place = self._place(stem)
            if place is not None:
                yield stem, place

    def _children(self, row_id: str) -> Iterator[tuple[str, str]]:
        """Earlier ids that would be fan-out children of `row_id` (`-:` sorts right after `-9`)."""
        found = self.db.execute("SELECT row_id, place FROM seen WHERE row_id >= ? AND row_id < ?", (f"{row_id}-0", f"{row_id}-:"))
        for other, place in found:
            if CHILD_SUFFIXES.fullmatch(other[len(row_id) :]):
                yield other, place
