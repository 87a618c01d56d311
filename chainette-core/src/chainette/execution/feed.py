"""Hand-offs between nodes: a node's frontier as the nodes after it read it while it grows.

The rules this module keeps:

- a row is handed on only once its commit is written (the writer's flush calls `Feed.release`), so a node never
  commits a row whose source commit a crash could still lose;
- what a reader has not reached yet waits on disk, in the frontier file; the latest commits are also kept in memory
  (at most RECENT), so that a reader at the tail takes their rows as they were made instead of decoding them again;
- backpressure: a node takes no new input row while the slowest reader of its own frontier is more than `WINDOW`
  rows behind it, so what waits between two nodes is bounded, not a queue of every row.

A reader starts at the beginning of the file: what earlier sessions committed comes first (less the rows its node
already decided), then the rows committed as they are written, until the node before finishes.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Callable, Container, Iterator
from dataclasses import replace
import os
from pathlib import Path
from typing import Protocol

from chainette.execution.stopping import StopSignal
from chainette.frontier import Commit, Row, count_rows, head, rows
from chainette.run.appends import LineFile

WINDOW = 1024
RECENT = WINDOW  # a feed keeps the latest RECENT to 2 * RECENT commits in memory, for the readers at its tail
CHUNK = 1 << 18  # bytes of lines a reader decodes at a time (what its buffer holds at most, besides one long line)


class Source(Protocol):
    """Where a stage takes its input rows: `next` gives the next row, or None once there are no more (or the run stops);
    several workers of one stage may await it at once. `ready` gives up to `limit` more rows that `next` would give
    without waiting (none when the run stops). `again` reads every row it gave again, from disk (a batch step, which
    keeps only ids while its batches run)."""

    async def next(self) -> Row | None: ...

    def ready(self, limit: int) -> list[Row]: ...

    def again(self) -> Iterator[Row]: ...


class Feed:
    """A node's frontier as its readers see it: the bytes written so far (`written`), how many rows it passed on
    (`rows`, earlier sessions' included), and whether the node finished (`closed`; a node an earlier session
    finished has no `file` and is closed from the start)."""

    def __init__(self, path: Path, file: LineFile | None, control: StopSignal):
        self.path = path
        self.file = file
        self.written = path.stat().st_size if path.exists() else 0
        self.rows = count_rows(path)
        self.closed = file is None
        self.readers: list[Reader] = []
        self.recent: list[tuple[int, list[Row]]] = []  # the end offset and rows of the latest commits, in order
        self.recent_start = self.written  # where the first of them starts in the file
        self.full = False  # whether the node waits for room
        self._changed = asyncio.Event()
        self._moved = asyncio.Event()
        control.on_stop(self.wake)

    def passed(self, rows: list[Row], size: int) -> None:
        """Note a commit of `rows`, `size` bytes long (handed on at the next `release`), kept in memory while a reader may
        want it."""
        if not self.readers:
            self.advanced(len(rows), size)
            return
        self.rows += len(rows)
        recent = self.recent
        recent.append(((recent[-1][0] if recent else self.recent_start) + size, rows))
        if len(recent) > 2 * RECENT:  # drop the older half at once: each commit is dropped once
            self.recent_start = recent[RECENT - 1][0]
            del recent[:RECENT]

    def advanced(self, rows: int, size: int) -> None:
        """Note commits of `rows` rows in all, `size` bytes long, that no reader follows yet (handed on at the next `release`)."""
        assert not self.readers, "a reader at the tail takes the rows of each commit: note them with `passed`"
        self.rows += rows
        self.recent_start = (self.recent[-1][0] if self.recent else self.recent_start) + size

    def recent_from(self, offset: int) -> list[tuple[int, list[Row]]] | None:
        """The commits kept in memory that start at `offset` and are written, in order; None when the commit at `offset`
        is no longer (or not) kept: it is read from the file."""
        recent = self.recent
        index = bisect.bisect_right(recent, offset, key=_end)
        if (recent[index - 1][0] if index else self.recent_start) != offset:
            return None
        return recent[index : bisect.bisect_right(recent, self.written, lo=index, key=_end)]

    def release(self) -> None:
        """Hand the rows whose commits are now written to the readers."""
        if self.file is not None and self.file.size != self.written:
            self.written = self.file.size
            self._changed.set()

    def close(self) -> None:
        """The node finished: readers end once they reach what it wrote."""
        self.release()
        self.closed = True
        self._changed.set()

    def wake(self) -> None:
        """Wake every reader and the node waiting for room (the run is stopping)."""
        self._changed.set()
        self._moved.set()

    async def changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def behind(self) -> int:
        """How many rows the slowest reader has not handed to its node yet (read into its buffer or not)."""
        return self.rows - min(reader.taken for reader in self.readers) if self.readers else 0

    def moved(self) -> None:
        """A reader handed rows on: the node waiting for room goes on once the slowest is back within WINDOW."""
        if self.full and self.behind() <= WINDOW:
            self._moved.set()

    async def room(self, control: StopSignal) -> None:
        """Wait until the slowest reader is at most WINDOW rows behind (or the run stops)."""
        while self.behind() > WINDOW and not control.stopping:
            self.full = True
            self._moved.clear()
            await self._moved.wait()
        self.full = False


def next_lines(fd: int, offset: int, written: int) -> bytes:
    """The whole lines of file `fd` from `offset` on (a chunk of them, at least one), of the `written` bytes, which end
    with a whole line."""
    data = os.pread(fd, min(written - offset, CHUNK), offset)
    end = data.rfind(b"\n") + 1
    if end == 0:  # a line longer than CHUNK
        data = os.pread(fd, written - offset, offset)
        end = len(data)
    return data[:end]


def _end(entry: tuple[int, list[Row]]) -> int:
    return entry[0]


class Reader:
    """The rows of `feed` for one node, in commit order, from the start of the file: those it has not `decided`, of
    input rows before `limit`. Before handing a row on it waits for room in `out`, the reading node's own feed.
    Once the feed is read to its end, `counted` hears how many rows of it the node receives over the run."""

    def __init__(
        self,
        feed: Feed,
        control: StopSignal,
        decided: Container[str] = frozenset(),
        *,
        limit: int | None = None,
        out: Feed | None = None,
        counted: Callable[[int], None] | None = None,
    ):
        self.feed = feed
        self.control = control
        self.decided = decided
        self.limit = limit
        self.out = out
        self.counted = counted
        self.beyond = 0  # rows of input rows past `limit`, skipped
        self.taken = 0  # rows handed to the node or skipped
        self.offset = 0
        self.buffer: deque[Row] = deque()
        self.fd = os.open(feed.path, os.O_RDONLY | os.O_CREAT, 0o644)
        feed.readers.append(self)

    async def next(self) -> Row | None:
        if self.out is not None and self.out.readers and self.out.behind() > WINDOW:
            await self.out.room(self.control)
        while not self.buffer:
            if self.control.stopping or self.fd < 0:
                self.close()
                return None
            if self._fill():
                continue
            if self.feed.closed and self.offset >= self.feed.written:
                self._end()
                return None
            await self.feed.changed()
        if self.control.stopping:
            return None
        self.taken += 1
        self.feed.moved()
        return self.buffer.popleft()

    def ready(self, limit: int) -> list[Row]:
        """Up to `limit` of the rows read already; none while the node waits for room in `out`."""
        buffer = self.buffer
        if self.control.stopping or not buffer or (self.out is not None and self.out.readers and self.out.behind() > WINDOW):
            return []
        taken = [buffer.popleft() for _ in range(min(limit, len(buffer)))]
        self.taken += len(taken)
        self.feed.moved()
        return taken

    def _fill(self) -> bool:
        """Take the next written commits' rows into the buffer, from memory where the feed still keeps them, else decoded
        from the file; whether there were any."""
        if self.feed.written <= self.offset:
            return False
        kept = self.feed.recent_from(self.offset)
        if kept:
            self.offset = kept[-1][0]
            for _, rows in kept:
                self._take(rows)
        else:
            self._read()
        self.feed.moved()
        return True

    def _read(self) -> None:
        """Decode the next written lines of the file (a chunk of them) into the buffer."""
        data = next_lines(self.fd, self.offset, self.feed.written)
        self.offset += len(data)
        skips = bool(self.decided) and self.limit is None
        for line in data.splitlines():
            if skips and self._decided_alone(line):
                continue
            self._take(Commit.decode(line).rows)

    def _decided_alone(self, line: bytes) -> bool:
        """Whether the commit `line` passes on one row, which the node decided already: taken without decoding it (a
        resumed node reads every commit before those it has left)."""
        count, _, first = head(line)
        if count != 1 or first not in self.decided:
            return False
        self.taken += 1
        return True

    def _take(self, rows: list[Row]) -> None:
        """Buffer the rows of one commit the node has to decide: not decided before, of input rows within `limit`."""
        for row in rows:
            if self.limit is not None and row.index >= self.limit:
                self.beyond += 1
            elif row.row_id not in self.decided:
                self.buffer.append(row)
                continue
            self.taken += 1

    def again(self) -> Iterator[Row]:
        return rows(self.feed.path)

    def _end(self) -> None:
        if self.fd >= 0 and self.counted is not None and not self.control.stopping:
            self.counted(self.taken - self.beyond)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Queue:
    """Rows handed to a node in memory (a parallel group's branches: the group bounds how many wait), each the row of
    `upstream` it came from tagged with its origin. Once it is closed, `counted` hears how many rows the node receives
    over the run: those put here and the `earlier` ones it decided in earlier sessions."""

    def __init__(self, control: StopSignal, counted: Callable[[int], None] | None = None, earlier: int = 0):
        self.upstream: Source | None = None
        self.control = control
        self.counted = counted
        self.given = earlier
        self.buffer: deque[Row] = deque()
        self.closed = False
        self._changed = asyncio.Event()
        control.on_stop(self._changed.set)

    def put(self, row: Row) -> None:
        self.buffer.append(row)
        self.given += 1
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()
        if self.counted is not None and not self.control.stopping:
            self.counted(self.given)

    def again(self) -> Iterator[Row]:
        assert self.upstream is not None, "a group gives its queues their upstream before any row"
        return (replace(row, origin=row.row_id) for row in self.upstream.again())

    async def next(self) -> Row | None:
        while not self.buffer:
            if self.closed or self.control.stopping:
                return None
            self._changed.clear()
            await self._changed.wait()
        return None if self.control.stopping else self.buffer.popleft()

    def ready(self, limit: int) -> list[Row]:
        buffer = self.buffer
        if self.control.stopping:
            return []
        return [buffer.popleft() for _ in range(min(limit, len(buffer)))]
