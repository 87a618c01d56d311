"""Scratch indexes: throwaway on-disk SQLite tables for one pass over rows (ids seen, joins, the flattened table)."""

from __future__ import annotations

from pathlib import Path
import sqlite3
from typing import TypeVar

IndexT = TypeVar("IndexT", bound="ScratchIndex")


class ScratchIndex:
    """An on-disk index for one pass over rows (no memory per row): a SQLite file with no journal and no fsync,
    created afresh with `tables` and removed on exit. Nothing in it needs to survive a crash."""

    def __init__(self, path: Path, tables: list[str]):
        self.path = path
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        for table in tables:
            self.db.execute(f"CREATE TABLE {table}")

    def __enter__(self: IndexT) -> IndexT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
