"""The blocks a pass of the driver hands to the workers: the input rows some unit has yet to decide, cut into blocks as
the input frontier grows, so that the first block starts while the input is still being read.

The rules this module keeps: every line of the input frontier is read once a pass, in order; a row is in at most one
block of a pass; at most `READY` blocks wait for a worker, so what the driver holds is bounded however large the input
(the rest waits on disk, in the frontier)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
import os

import orjson

from chainette.execution.feed import Feed, next_lines
from chainette.execution.stopping import StopSignal

Block = tuple[bytes, int]
"""A block: the input frontier's commit lines of its rows, and how many rows."""
READY = 4
"""Blocks made and not yet handed to a worker, at most."""


class Blocks:
    """The blocks of one pass over the input `feed`: the rows it `wanted` (by id and position; None: every row), at
    most `size` a block. `fill` makes them; the driver takes them with `take` as workers have room."""

    def __init__(self, feed: Feed, control: StopSignal, size: int, wanted: Callable[[str, int], bool] | None):
        self.feed, self.control, self.size = feed, control, size
        self.wanted = wanted
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
        """Read the input frontier to its end (its node finished), making the pass's blocks."""
        lines: list[bytes] = []
        try:
            async for line in frontier_lines(self.feed, self.control):
                if self.wanted is None or self._wants(line):
                    lines.append(line)
                if len(lines) == self.size:
                    await self._made(lines)
                    lines = []
            if lines:
                await self._made(lines)
        finally:
            self.finished = True
            self._changed.set()

    def _wants(self, line: bytes) -> bool:
        assert self.wanted is not None
        (row,) = orjson.loads(line)["rows"]  # an input commit passes its one row on
        return self.wanted(row["row_id"], row["index"])

    async def _made(self, lines: list[bytes]) -> None:
        while len(self.ready) >= READY and not self.control.stopping:
            self._taken.clear()
            await self._taken.wait()
        self.ready.append((b"".join(lines), len(lines)))
        self._changed.set()


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
