"""The input stage numbers each row by its place in the input, or by its own position when it was read apart from the
rest (a plan's sample, a Ray block), id and index alike; a limit keeps the rows before that position."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from chainette.events import EventBus
from chainette.execution.files import ErrorLog, NodeFiles
from chainette.execution.ingest import ingest
from chainette.execution.stopping import StopSignal
from chainette.frontier import rows
from chainette.inputs import RawRow
from chainette.nodes import INPUT_ID
from chainette.run.appends import Writer
from chainette.stats import NodeStats


class Number(BaseModel):
    n: int


def read(tmp_path, raw: list[RawRow], limit: int | None) -> tuple[list[tuple[str, int]], list[str], bool]:
    """(id, index) of each row committed, the ids of those failed, and whether the limit left rows unread."""
    writer, control = Writer(), StopSignal()
    errors = ErrorLog(writer, tmp_path / "errors.jsonl", EventBus(), {}, set())
    files = NodeFiles(writer, INPUT_ID, tmp_path / "input.jsonl", None, 0, errors, control)
    stats = NodeStats("input")
    limited = asyncio.run(ingest(raw, Number, frozenset(), files, stats, limit=limit))
    writer.flush()
    failed = [line.split('"row_id":"')[1].split('"')[0] for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    return [(row.row_id, row.index) for row in rows(tmp_path / "input.jsonl")], failed, limited


def test_rows_with_their_own_positions_are_numbered_by_them_and_limited_by_them(tmp_path):
    raw = [RawRow(f"in.jsonl:{p + 1}", f'{{"n": {p}}}\n', position=p) for p in (5, 9, 12)]
    raw.insert(2, RawRow("in.jsonl:11", '{"n": "ten"}\n', position=10))
    (tmp_path / "all").mkdir()
    assert read(tmp_path / "all", raw, None) == ([("5", 5), ("9", 9), ("12", 12)], ["10"], False)
    (tmp_path / "some").mkdir()
    assert read(tmp_path / "some", raw, 12) == ([("5", 5), ("9", 9)], ["10"], True), "rows from position 12 on are left"


def test_rows_without_positions_are_numbered_by_their_place(tmp_path):
    raw = [RawRow(f"in.jsonl:{p + 1}", f'{{"n": {p}}}\n') for p in range(4)]
    assert read(tmp_path, raw, 3) == ([("0", 0), ("1", 1), ("2", 2)], [], True)
