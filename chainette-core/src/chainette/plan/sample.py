"""The rows a plan runs: the input's rows counted (a text file's lines are not decoded, a Parquet file's count is read
from its footer), then a sample of them, spread evenly over the input when it can be read twice (a file, a list), else
its first rows."""

from __future__ import annotations

from dataclasses import dataclass, replace
import itertools
import os

from chainette import inputs, parquet
from chainette.errors import InputError
from chainette.remote import open_binary

PARQUET = (".parquet", ".pq")


@dataclass
class Sample:
    """The input's `total` rows and `rows`, a sample of them with their positions in the input; `spread` says whether the
    sample is spread over the input or is its first rows."""

    total: int
    rows: list[tuple[int, inputs.RawRow]]
    spread: bool

    def runnable(self, columns: inputs.Columns | None) -> list[inputs.RawRow]:
        """The sample's rows to run, picking `columns`, each numbered by its position in the input as the whole run numbers
        it (a step whose cache key holds the row's id then stores what that run looks up); a row that cannot be read is
        left out: it costs nothing."""
        found = []
        for position, raw in self.rows:
            try:
                inputs.decode(raw)
            except ValueError:
                continue
            found.append(replace(raw, columns=columns, position=position))
        return found


def sample_rows(source: inputs.Inputs, size: int) -> Sample:
    """`size` rows of `source`, spread evenly over it when it can be read twice, else its first rows (the rest of a
    one-shot iterator is then only counted)."""
    if isinstance(source, (str, os.PathLike, list, tuple)):
        total = count_rows(source)
        wanted = spread_positions(total, size)
        picked = [(index, raw) for index, raw in enumerate(inputs.open_rows(source, None)) if index in wanted]
        return Sample(total, picked, spread=total > size)
    rows = iter(inputs.open_rows(source, None))
    first = list(enumerate(itertools.islice(rows, size)))
    return Sample(len(first) + sum(1 for _ in rows), first, spread=False)


def count_rows(source: inputs.Inputs) -> int:
    """How many rows `source` holds: a Parquet file's footer says, else its rows are read (not decoded)."""
    if isinstance(source, (str, os.PathLike)) and inputs.hf_source(source) is None:
        found = inputs.location(source)
        if found.suffix.lower() in PARQUET:
            pa = parquet.require(f"Counting the rows of {found}", InputError)
            with open_binary(found) as handle:
                return int(pa.parquet.ParquetFile(handle).metadata.num_rows)
    return sum(1 for _ in inputs.open_rows(source, None))


def spread_positions(total: int, size: int) -> set[int]:
    """`size` positions out of `total`, evenly spaced from the first (all of them when there are no more)."""
    return {index * total // size for index in range(size)} if total > size else set(range(total))
