"""Reading a run's files from any position without loading them whole: JSONL through a sparse line-offset index
built as pages are asked for, Parquet one row group at a time.

A position is `(part, row)`: the numbered file of a folder and the row inside it. Only complete JSONL lines are
read, so a file a running chain is appending to is read up to its last full line, and again further on later.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
import os
from pathlib import Path
from typing import Any, Protocol

import orjson

from chainette import parquet

STRIDE = 1000
"""A JSONL part remembers the byte offset of every STRIDE-th line it has read past."""

Position = tuple[int, int]
Keep = Callable[[bytes], bool]
"""Whether a raw JSONL line is wanted (checked before decoding it)."""


class Part(Protocol):
    """One numbered file of a folder, read from a row on."""

    def rows_from(self, row: int) -> Iterator[tuple[int, dict[str, Any] | None]]: ...


class JsonlPart:
    """A JSONL file read from any line: seeks to the nearest remembered offset, then reads forward."""

    def __init__(self, path: Path, keep: Keep | None = None):
        self.path = path
        self._lines = [0]
        self._offsets = [0]
        self._keep = keep

    def rows_from(self, row: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """`(line, record)` for each complete line from `row` on; the record is None for a line `keep` refuses (not decoded)."""
        for line, raw in self._raw_lines_from(row):
            yield line, orjson.loads(raw) if self._keep is None or self._keep(raw) else None

    def _raw_lines_from(self, row: int) -> Iterator[tuple[int, bytes]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < self._offsets[-1]:  # cut short (a resume drops a torn line): index anew
                self._lines, self._offsets = [0], [0]
            at = bisect_right(self._lines, row) - 1
            line, offset = self._lines[at], self._offsets[at]
            handle.seek(offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return
                offset += len(raw)
                line += 1
                if line % STRIDE == 0 and line > self._lines[-1]:
                    self._lines.append(line)
                    self._offsets.append(offset)
                if line > row:
                    yield line - 1, raw


class ParquetPart:
    """A Parquet file read from any row: the row groups before it are skipped by their counts in the footer."""

    def __init__(self, path: Path):
        self.path = path

    def rows_from(self, row: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
        pa = parquet.require(f"Reading {self.path}")
        file = pa.parquet.ParquetFile(self.path)
        encoded = parquet.json_fields(file.schema_arrow)
        first = 0
        for group in range(file.metadata.num_row_groups):
            size = file.metadata.row_group(group).num_rows
            if first + size > row:
                records = file.read_row_group(group).to_pylist()
                for at in range(max(row - first, 0), size):
                    yield first + at, _decoded(records[at], encoded)
            first += size


def _decoded(record: dict[str, Any], encoded: list[str]) -> dict[str, Any]:
    for name in encoded:
        if record[name] is not None:
            record[name] = orjson.loads(record[name])
    return record


class Table:
    """The numbered files of one place (an output folder, or a single file such as errors.jsonl), read from a position.

    Parts are opened once and kept, so their line indexes grow across requests; new numbered files are picked up.
    """

    def __init__(self, find: Callable[[], list[Path]], keep: Keep | None = None):
        self._find = find
        self._keep = keep
        self._parts: dict[Path, Part] = {}

    def rows_from(self, position: Position) -> Iterator[tuple[Position, dict[str, Any] | None]]:
        """`((part, row), record)` for each row from `position` on, part by part (None for a line `keep` refuses)."""
        for number, path in enumerate(self._find()):
            if number < position[0]:
                continue
            start = position[1] if number == position[0] else 0
            for row, record in self._part(path).rows_from(start):
                yield (number, row), record

    def _part(self, path: Path) -> Part:
        if path not in self._parts:
            self._parts[path] = ParquetPart(path) if path.suffix == ".parquet" else JsonlPart(path, self._keep)
        return self._parts[path]


def numbered(folder: Path, staged: Path | None = None) -> list[Path]:
    """The numbered output files of `folder` (Parquet when the run wrote some, else JSONL); a Parquet run still going
    has only its staged JSONL files (`staged`)."""
    parquet_files = sorted(folder.glob("[0-9][0-9][0-9]*.parquet"))
    if parquet_files:
        return parquet_files
    jsonl_files = sorted(folder.glob("[0-9][0-9][0-9]*.jsonl"))
    if jsonl_files or staged is None:
        return jsonl_files
    return sorted(staged.glob("[0-9][0-9][0-9]*.jsonl"))


def encode_cursor(position: Position) -> str:
    return f"{position[0]}:{position[1]}"


def decode_cursor(cursor: str | None) -> Position:
    """The position a cursor names; the start for none. A malformed cursor is a ValueError."""
    if not cursor:
        return (0, 0)
    part, _, row = cursor.partition(":")
    position = (int(part), int(row))
    if min(position) < 0:
        raise ValueError(cursor)
    return position
