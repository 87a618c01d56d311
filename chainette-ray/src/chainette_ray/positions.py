"""RowPositions: the rows a unit passed on before a pass, each id with the input position it comes from, as the driver
holds them on a resume. The rule: a row whose id is its own position ("17", the ids a run gives) costs a bit (the
core's RowIds); any other (a fan-out child "17-0", a user's own id) keeps its id and position, so a resumed
100M-row job holds megabytes, not a string and a dict entry for each row of each unit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from chainette.execution.rowids import POSITIONS, RowIds
from chainette.frontier import row_records


class RowPositions:
    """Row ids with their input positions: `add`, `in`, `len`, and `items` (id and position, in no set order)."""

    __slots__ = ("_others", "_own")

    def __init__(self) -> None:
        self._own = RowIds()
        self._others: dict[str, int] = {}

    def add(self, row_id: str, index: int) -> None:
        if index < POSITIONS and row_id == str(index):
            self._own.add(row_id)
        else:
            self._others[row_id] = index

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._own or row_id in self._others

    def __len__(self) -> int:
        return len(self._own) + len(self._others)

    def items(self) -> Iterator[tuple[str, int]]:
        yield from ((row_id, int(row_id)) for row_id in self._own)
        yield from self._others.items()


def passed_on(frontier: Path) -> RowPositions:
    """The rows a frontier file passed on (nothing when it does not exist)."""
    positions = RowPositions()
    for row in row_records(frontier):
        positions.add(row["row_id"], row["index"])
    return positions
