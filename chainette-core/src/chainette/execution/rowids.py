"""RowIds: the ids of the rows a node decided in earlier sessions, as a resumed run holds them. The rule: an id written
as a row position ("0", "17", no leading zero, below `POSITIONS`) costs one bit, in a bitmap; any other id (a fan-out
child "17-0", a user's own id) is kept as it is. A run numbers its rows by position, so a resume holds about 125 KB
for each million rows a node decided, not a string and a set entry (about 100 bytes) for each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import re

POSITIONS = 1 << 27
"""Ids of positions below this go in the bitmap (16 MiB at most); larger ones are kept as they are."""
_SET_BYTE = re.compile(rb"[^\x00]")


class RowIds:
    """A set of row ids that can be added to, asked and gone through: `add`, `update`, `in`, `len`, `isdisjoint`, `iter`
    (the positions in order, then the other ids)."""

    __slots__ = ("_bits", "_count", "_others")

    def __init__(self, ids: Iterable[str] = ()):
        self._bits = bytearray()
        self._count = 0
        self._others: set[str] = set()
        self.update(ids)

    def add(self, row_id: str) -> None:
        position = _position(row_id)
        if position is None:
            self._others.add(row_id)
            return
        byte, bit = position >> 3, 1 << (position & 7)
        if byte >= len(self._bits):  # grow by doubling, to the bitmap's bound at most
            self._bits.extend(bytes(min(max(byte + 1, 2 * len(self._bits)), POSITIONS >> 3) - len(self._bits)))
        if not self._bits[byte] & bit:
            self._bits[byte] |= bit
            self._count += 1

    def update(self, ids: Iterable[str]) -> None:
        for row_id in ids:
            self.add(row_id)

    def __contains__(self, row_id: object) -> bool:
        if not isinstance(row_id, str):
            return False
        position = _position(row_id)
        if position is None:
            return row_id in self._others
        byte = position >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (position & 7)))

    def __len__(self) -> int:
        return self._count + len(self._others)

    def __iter__(self) -> Iterator[str]:
        for found in _SET_BYTE.finditer(self._bits):  # the bitmap's bytes that hold a position, found at C speed
            byte, bits = found.start(), found[0][0]
            yield from (str(byte << 3 | bit) for bit in range(8) if bits >> bit & 1)
        yield from self._others

    def isdisjoint(self, ids: Iterable[str]) -> bool:
        """Whether none of `ids` is in the set."""
        return not any(row_id in self for row_id in ids)


def _position(row_id: str) -> int | None:
    """The position `row_id` writes (its decimal digits, no leading zero), when below POSITIONS; else None."""
    if 0 < len(row_id) <= 9 and row_id.isascii() and row_id.isdigit() and (row_id[0] != "0" or row_id == "0"):
        position = int(row_id)
        return position if position < POSITIONS else None
    return None


Decided = RowIds | frozenset[str]
"""The rows a reopened node decided: RowIds, or, when it decided none, an empty frozenset (asked faster, row after row)."""


def as_decided(ids: RowIds) -> Decided:
    """`ids` as a reopened node holds them (see `Decided`)."""
    return ids if len(ids) else frozenset()
