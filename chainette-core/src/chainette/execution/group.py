"""Parallel groups, streaming: a group reads its rows once and hands each to every branch, tagged with its origin
(the row it came from). It follows each branch's decisions in a `Ledger`, and once every branch has decided all
that came of a row, it commits the row to its own frontier with each joined branch's values, or filters it out when
a joined branch passed nothing on from it. A row joins only after the branches' commits for it are written, so a
crash never leaves a joined row whose branch results it could lose. At most `WINDOW` rows are inside a group at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from chainette.execution.context import keep
from chainette.execution.feed import WINDOW, Queue, Source
from chainette.execution.files import NodeFiles
from chainette.execution.stopping import StopSignal
from chainette.frontier import Row
from chainette.run.appends import Writer


@dataclass
class Ledger:
    """One branch's account of the rows inside the group: how many rows of each origin it has still to decide
    (`open`), the values its last node passed on for each (kept when the branch is joined under `alias`), and
    `entered`, the origins whose rows its first node decided in earlier sessions."""

    group: Group
    alias: str | None
    entered: Container[str]
    open: dict[str, int] = field(default_factory=dict)
    values: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)

    def decided(self, last: bool, row: Row, children: list[Row]) -> None:
        """A node of the branch (its `last` or not) decided `row`, passing `children` on."""
        origin = row.origin or row.row_id
        left = self.open[origin] - 1
        if not last:
            left += len(children)
        elif self.alias is not None and children:
            self.values.setdefault(origin, []).extend((child.row_id, child.ctx[child.direct]) for child in children)
        if left:
            self.open[origin] = left
            return
        del self.open[origin]
        self.group.branch_done(origin)

    def recount(self, pending: Iterable[Row], finals: Iterable[Row]) -> None:
        """After a crash: count the rows its nodes after the first have still to decide, and gather its last node's
        values for the rows the group has not joined."""
        for row in pending:
            origin = row.origin or row.row_id
            self.open[origin] = self.open.get(origin, 0) + 1
        if self.alias is not None:
            for row in finals:
                self.values.setdefault(row.origin or row.row_id, []).append((row.row_id, row.ctx[row.direct]))

    def value(self, origin: str) -> list[Any]:
        """The values the branch passed on from `origin`, in fan-out order (`6-0`, `6-1`, …, `6-10`), whatever order
        they were answered in."""
        found = self.values.pop(origin, [])
        found.sort(key=lambda pair: [int(part) for part in pair[0][len(origin) :].split("-")[1:]])
        return [value for _, value in found]


class Group:
    """A parallel group in one session: its frontier (`files`), its branches' ledgers and input queues."""

    def __init__(self, files: NodeFiles, writer: Writer, control: StopSignal, kept: frozenset[str], *, bounded: bool = True):
        self.files = files
        self.window = WINDOW if bounded else None
        self.writer = writer
        self.control = control
        self.kept = kept
        self.ledgers: list[Ledger] = []
        self.queues: list[Queue] = []
        self.held: dict[str, Row] = {}
        self.waiting: dict[str, int] = {}
        self.ready: list[tuple[int, str]] = []  # rows every branch decided, with the flush they wait for
        self._room = asyncio.Event()
        writer.flushed.append(self._join_ready)
        control.on_stop(self._room.set)

    def branch(self, alias: str | None, entered: Container[str], queue: Queue) -> Ledger:
        """Add a branch whose first node reads `queue`; return its ledger."""
        ledger = Ledger(self, alias, entered)
        self.ledgers.append(ledger)
        self.queues.append(queue)
        return ledger

    async def dispatch(self, source: Source) -> None:
        """Hand every row of `source` to the branches (at most WINDOW inside the group at once, when `bounded`)."""
        for queue in self.queues:
            queue.upstream = source
        while (row := await source.next()) is not None:
            while self.window is not None and len(self.held) >= self.window and not self.control.stopping:
                self._room.clear()
                await self._room.wait()
            self._admit(row)
        for queue in self.queues:
            queue.close()

    def retry(self, joined: Iterable[Row]) -> None:
        """Hand each branch the rows the group already joined that its first node has not decided: with --retry-errors,
        a row that failed in a branch not joined (the group passed it on regardless) is asked again there."""
        for row in joined:
            tagged = replace(row, origin=row.row_id)
            for ledger, queue in zip(self.ledgers, self.queues, strict=True):
                if row.row_id not in ledger.entered:
                    ledger.open[row.row_id] = ledger.open.get(row.row_id, 0) + 1
                    queue.put(tagged)

    def _admit(self, row: Row) -> None:
        origin = row.row_id
        self.held[origin] = row
        self.waiting[origin] = len(self.ledgers)
        tagged = replace(row, origin=origin)
        for ledger, queue in zip(self.ledgers, self.queues, strict=True):
            if origin in ledger.entered:
                if origin not in ledger.open:
                    self.branch_done(origin)
                continue
            ledger.open[origin] = ledger.open.get(origin, 0) + 1
            queue.put(tagged)

    def branch_done(self, origin: str) -> None:
        """A branch decided everything that came of `origin` (a row not admitted yet is checked when it is)."""
        if origin not in self.held:
            return
        self.waiting[origin] -= 1
        if not self.waiting[origin]:
            self.ready.append((self.writer.flushes, origin))

    def _join_ready(self) -> None:
        """After a flush: join the rows whose branch commits it wrote (those ready before it began)."""
        written = [origin for flush, origin in self.ready if flush < self.writer.flushes]
        if not written:
            return
        self.ready = [(flush, origin) for flush, origin in self.ready if flush >= self.writer.flushes]
        for origin in written:
            self._join(origin)
        self._room.set()

    def _join(self, origin: str) -> None:
        """Commit the row `origin` with each joined branch's values, or filtered out when a joined branch has none."""
        row = self.held.pop(origin)
        del self.waiting[origin]
        found = [(ledger.alias, ledger.value(origin)) for ledger in self.ledgers]
        values = {alias: value[0] if len(value) == 1 else value for alias, value in found if alias is not None}
        if any(alias is not None and not value for alias, value in found):
            self.files.commit(row, [])
            return
        self.files.commit(row, [replace(row, ctx=keep({**row.ctx, **values}, self.kept, row.direct))])

    def settle(self) -> bool:
        """Once the branches ended: write out and join what is ready; whether every row admitted was joined."""
        while self.ready:
            self.writer.flush()
        return not self.held
