"""Frontier records: how rows travel from node to node, and what a node's commit log holds.

A node reads its input rows from the previous node's frontier and appends one `Commit` per input
row it passes or filters out: the rows it produced from it (one, several when an apply fans a row
out, none when it filters it). A row that fails is committed to the errors file instead. One line
per input row makes a fan-out atomic: a crash can cut a line, never a group of children.

Each line is `{"n": <rows>, "source": ..., "rows": [...]}`, and `"cached": true` where a step took the row's answers
from the response cache instead of asking: the keys are the record's own, never user data, and `n` comes first so
that a frontier's rows can be counted without decoding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
import re
from typing import Any

import orjson

_HEAD = re.compile(rb'\{"n":(\d+),"source":"((?:[^"\\]|\\.)*)"(?:,"rows":\[\{"row_id":"((?:[^"\\]|\\.)*)")?')
"""A commit line's leading fields as `Commit.encode` writes them: its row count, source, and first row's id."""
Head = tuple[int, str, str | None]
"""A commit's row count, source, and the id of its first row (None when it passes none)."""


@dataclass
class Row:
    """A row between two nodes: `ctx` holds the chain input and every earlier output by id, `direct` names
    the entry that is the next node's direct input, `origin` the row a parallel group's branches started from,
    `index` the position of the input row it comes from, `up` the ids of the rows it was fanned out from
    (nearest first; ids are the user's own with `id_column`, so they are never parsed).

    Not slotted: orjson writes a dataclass that has a `__dict__` from it, three times faster than one with slots."""

    row_id: str
    ctx: dict[str, Any]
    direct: str
    origin: str | None = None
    index: int = 0
    up: list[str] = field(default_factory=list)

    def passed_on(self, ctx: dict[str, Any], direct: str, child: int | None = None) -> Row:
        """This row as a node passes it on with `ctx` and its output `direct`: itself, or its `child`-th fan-out child
        (`<row_id>-<child>`, this row first in its lineage)."""
        if child is None:
            return Row(self.row_id, ctx, direct, self.origin, self.index, self.up)
        return Row(f"{self.row_id}-{child}", ctx, direct, self.origin, self.index, [self.row_id, *self.up])


@dataclass(slots=True)
class Commit:
    """What a node did with its input row `source`: the rows it produced from it (none: filtered out); `cached`: a
    step answered it from the response cache."""

    source: str
    rows: list[Row] = field(default_factory=list)
    cached: bool = False

    def encode(self) -> bytes:
        """The commit as one JSONL line."""
        record: dict[str, Any] = {"n": len(self.rows), "source": self.source, "rows": self.rows}
        if self.cached:
            record["cached"] = True
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def decode(cls, line: bytes) -> Commit:
        record = orjson.loads(line)
        return cls(record["source"], [Row(**row) for row in record["rows"]], record.get("cached", False))


def commits(path: Path) -> Iterator[Commit]:
    """Every commit of a frontier file (nothing if it does not exist)."""
    if not path.exists():
        return
    with open(path, "rb") as file:
        for line in file:
            yield Commit.decode(line)


def head(line: bytes) -> Head:
    """A commit line's row count, source and first row's id, read without decoding its rows."""
    found = _HEAD.match(line)
    if found is None:  # not as `encode` writes it: decoded whole
        commit = Commit.decode(line)
        return len(commit.rows), commit.source, commit.rows[0].row_id if commit.rows else None
    source, first = _text(found[2]), found[3]
    if first is None:
        return int(found[1]), source, None
    return int(found[1]), source, source if first == found[2] else _text(first)  # a row passed on as itself: its source's id


def heads(path: Path) -> Iterator[Head]:
    """Every commit of a frontier file as its `head` (nothing if the file does not exist)."""
    if not path.exists():
        return
    with open(path, "rb") as file:
        for line in file:
            yield head(line)


def _text(raw: bytes) -> str:
    """The text of a JSON string's content as orjson writes it (UTF-8, escaped only where it holds a backslash)."""
    return str(orjson.loads(b'"' + raw + b'"')) if b"\\" in raw else raw.decode()


def rows(path: Path) -> Iterator[Row]:
    """The rows a frontier passes on, in commit order."""
    for commit in commits(path):
        yield from commit.rows


def row_records(path: Path) -> Iterator[dict[str, Any]]:
    """The rows a frontier passes on, in commit order, each as its record (a dict of Row's fields): read without building
    Row objects (nothing if the file does not exist)."""
    if not path.exists():
        return
    with open(path, "rb") as file:
        for line in file:
            yield from orjson.loads(line)["rows"]


def count_rows(path: Path) -> int:
    """How many rows a frontier passes on, read from each line's leading `n` without decoding the rest."""
    if not path.exists():
        return 0
    prefix = len(b'{"n":')
    with open(path, "rb") as file:
        return sum(int(line[prefix : line.index(b",", prefix)]) for line in file)
