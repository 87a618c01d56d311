"""The blocks a pass of the driver hands to the workers: the input rows some unit has yet to decide, cut into blocks as
they come, so that the first block starts while the input is still being read. They come as read from the input, for
the blocks to validate (`InputRows`), or from the input frontier as it grows (`frontier_rows`).

The rules this module keeps: every input row is read once a pass, in order; a row is in at most one block of a pass; at
most `READY` blocks wait for a worker, so what the driver holds is bounded however large the input (the rest waits in
the input, or on disk in the frontier)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
import itertools
import os
from typing import Generic, TypeVar

import orjson

from chainette.execution.feed import Feed, next_lines
from chainette.execution.stopping import StopSignal
from chainette.inputs import RawRow
from chainette_ray.block import RawBlock

Block = tuple[bytes | RawBlock, int]
"""A block: its rows (as read, or the input frontier's commit lines for them), and how many."""
Wanted = Callable[[str, int], bool] | None
"""Whether a pass wants the input row of this id and position in a block (None: every row)."""
READY = 4
"""Blocks made and not yet handed to a worker, at most."""
YIELD_EVERY = 256
"""Input rows read before letting the loop commit blocks and hand them on."""
T = TypeVar("T")


class Blocks(Generic[T]):
    """The blocks of one pass: the `rows` it wants, at most `size` a block, each made by `pack`. `fill` makes them; the
    driver takes them with `take` as workers have room."""

    def __init__(self, rows: AsyncIterator[T], pack: Callable[[list[T]], Block], control: StopSignal, size: int):
        self.rows, self.pack, self.control, self.size = rows, pack, control, size
        self.ready: deque[Block] = deque()
        self.finished = False
        self._changed = asyncio.Event()
        self._taken = asyncio.Event()

    def take(self) -> Block | None:
        """The next block made, if one is ready."""
        if not self.ready:
            return None
        self._taken.set()
        return self.ready.popleft()

    async def changed(self) -> None:
        """Wait until a block is made or the pass has made its last."""
        while not self.ready and not self.finished:
            self._changed.clear()
            await self._changed.wait()

    async def fill(self) -> None:
        """Read the rows to their end, making the pass's blocks."""
        rows: list[T] = []
        try:
            async for row in self.rows:
                rows.append(row)
                if len(rows) == self.size:
                    await self._made(rows)
                    rows = []
            if rows:
                await self._made(rows)
        finally:
            self.finished = True
            self._changed.set()

    async def _made(self, rows: list[T]) -> None:
        while len(self.ready) >= READY and not self.control.stopping:
            self._taken.clear()
            await self._taken.wait()
        self.ready.append(self.pack(rows))
        self._changed.set()


class InputRows:
    """The input's rows as read, for the blocks to validate: the first `limit` of them, each numbered by its position.
    Once read, `count` says how many there were (`counted` is told) and `limited` whether the limit left rows unread."""

    def __init__(self, raw_rows: Iterable[RawRow], limit: int | None, counted: Callable[[int], None]):
        self.remaining = iter(raw_rows)
        self.limit, self.counted = limit, counted
        self.count = 0
        self.limited = False

    async def wanted(self, control: StopSignal, wanted: Wanted) -> AsyncIterator[tuple[int, RawRow]]:
        """Each row `wanted` with its position, in order, until the input ends (or the run stops)."""
        for position, raw in enumerate(itertools.islice(self.remaining, self.limit)):
            if position % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if control.stopping:
                    return
            if wanted is None or wanted(str(position), position):
                yield position, raw
            self.count = position + 1
        self.limited = self.limit is not None and next(self.remaining, None) is not None
        self.counted(self.count)


def pack_read(rows: list[tuple[int, RawRow]]) -> Block:
    """A block of rows as read."""
    return RawBlock.of(rows), len(rows)


async def frontier_rows(feed: Feed, control: StopSignal, wanted: Wanted) -> AsyncIterator[bytes]:
    """The commit line of each input row `wanted` in `feed`'s frontier, in order, as it is written, until its node
    finished (or the run stops)."""
    async for line in frontier_lines(feed, control):
        if wanted is None or _wants(wanted, line):
            yield line


def pack_lines(lines: list[bytes]) -> Block:
    """A block of input frontier commit lines."""
    return b"".join(lines), len(lines)


def _wants(wanted: Callable[[str, int], bool], line: bytes) -> bool:
    (row,) = orjson.loads(line)["rows"]  # an input commit passes its one row on
    return wanted(row["row_id"], row["index"])


async def frontier_lines(feed: Feed, control: StopSignal) -> AsyncIterator[bytes]:
    """Each line of `feed`'s frontier as it is written, from the start, until its node finished (or the run stops)."""
    offset = 0
    fd = os.open(feed.path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        while not control.stopping:
            if feed.written > offset:
                data = next_lines(fd, offset, feed.written)
                offset += len(data)
                for line in data.splitlines(keepends=True):
                    yield line
                await asyncio.sleep(0)
            elif feed.closed:
                return
            else:
                await feed.changed()
    finally:
        os.close(fd)
