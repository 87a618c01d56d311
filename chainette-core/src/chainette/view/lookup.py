"""Finding a record of a JSONL file by a key, the file read forward only as far as the keys asked for need.

Only the byte offset of each key seen is kept, never the records, so a lookup reads one line; a key not seen yet
reads on from where the last scan stopped (a file that grows is read further on the next miss).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
import os
from pathlib import Path
from typing import Any, BinaryIO

import orjson

Entries = Callable[[dict[str, Any]], Iterator[tuple[Hashable, Any]]]
"""The `(key, value)` pairs a record of the file holds: a frontier line holds one per row it passed on."""


class KeyedLines:
    """The values of a JSONL file's records, found by key."""

    def __init__(self, path: Path, entries: Entries):
        self.path = path
        self._entries = entries
        self._offsets: dict[Hashable, int] = {}
        self._scanned = 0

    def find(self, key: Hashable) -> Any:
        """The value stored under `key`, or None when no complete line holds it (yet)."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < self._scanned:  # cut short (a resume drops a torn line): index anew
                self._offsets, self._scanned = {}, 0
            if key not in self._offsets:
                self._scan_for(key, handle)
            offset = self._offsets.get(key)
            if offset is None:
                return None
            handle.seek(offset)
            record = orjson.loads(handle.readline())
        return next((value for found, value in self._entries(record) if found == key), None)

    def _scan_for(self, key: Hashable, handle: BinaryIO) -> None:
        """Read on from where the last scan stopped, remembering every key's offset, until `key` or the last full line."""
        handle.seek(self._scanned)
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            offset = self._scanned
            self._scanned += len(raw)
            for found, _ in self._entries(orjson.loads(raw)):
                self._offsets.setdefault(found, offset)
            if key in self._offsets:
                return


def frontier_rows(key: str) -> Entries:
    """Entries of a frontier file: each row it passed on, under its `key` field (`row_id`, or `index` for the input's)."""

    def entries(record: dict[str, Any]) -> Iterator[tuple[Hashable, Any]]:
        for row in record.get("rows", ()):
            yield row.get(key), row

    return entries


def answered_from_cache(record: dict[str, Any]) -> Iterator[tuple[Hashable, Any]]:
    """Entries of a step's frontier file: whether each row it passed on was answered from the response cache."""
    for row in record.get("rows", ()):
        yield row.get("row_id"), bool(record.get("cached"))


def flattened_inputs(record: dict[str, Any]) -> Iterator[tuple[Hashable, Any]]:
    """The chain input of a flattened line (its `chain_input.<field>` columns), under its `row_index`."""
    prefix = "chain_input."
    yield record.get("row_index"), {name[len(prefix) :]: value for name, value in record.items() if name.startswith(prefix)}
