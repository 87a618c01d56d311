"""The response cache's writer: a batch of answers and hits reaches the file in one transaction of a few statements,
whatever its size, and off the event loop.

A batch travels as SQLite takes it whole: the answers' keys (KEY_BYTES each) joined in one blob beside a JSON array of
what each key stores, and the keys of the hits likewise, grouped by how often each was hit. SQLite parses, sorts and
stores it in C with the GIL released, in the writer's own thread, so that the run goes on meanwhile on another core.
One batch is written at a time: handing on the next waits for it, and a failure is raised to whoever waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
import sqlite3

import orjson

KEY_BYTES = 32  # a key is a sha256 digest
EVICT_TO = 0.9  # eviction stops at this share of the size cap

Stored = tuple[str, str, tuple[str, str | None, int, int, int, int]]
"""What one key stores: the backend, the model, and the answer as its row holds it (text, reasoning, tokens); plain
values only, which the garbage collector stops tracking."""

INSERT = f"""
INSERT INTO answers (key, backend, model, created, used, size, answer)
SELECT substr(:keys, entry.key * {KEY_BYTES} + 1, {KEY_BYTES}), json_extract(entry.value, '$[0]'), json_extract(entry.value, '$[1]'), :now, :now,
       length(CAST(json_extract(entry.value, '$[2]') AS BLOB)) + {KEY_BYTES}, CAST(json_extract(entry.value, '$[2]') AS BLOB)
FROM json_each(:stored) AS entry WHERE true ORDER BY 1, entry.key
ON CONFLICT (key) DO UPDATE SET created = excluded.created, used = excluded.used, size = excluded.size, answer = excluded.answer
"""
"""Store each answer of a batch, in key order (neighbouring keys share the index's pages; of two answers under one key,
the later wins)."""

SIZE = f"SELECT total(length(CAST(json_extract(entry.value, '$[2]') AS BLOB)) + {KEY_BYTES}) FROM json_each(:stored) AS entry"

EACH_KEY = (
    f"WITH RECURSIVE at(start) AS (SELECT 1 UNION ALL SELECT start + {KEY_BYTES} FROM at WHERE start + {KEY_BYTES} <= length(:keys)) "
    f"SELECT substr(:keys, start, {KEY_BYTES}) FROM at"
)
"""Each key of the blob `:keys` (KEY_BYTES each), one per row."""

TOUCH = f"UPDATE answers SET used = :now, hits = hits + :count WHERE key IN ({EACH_KEY})"
"""Count `count` more hits of each of `keys`, last used `now`."""


@dataclass(frozen=True)
class Batch:
    """Answers to store (`keys` joined, `stored` a JSON array of what each holds) and hits to count (keys joined per
    count), all as of `now`."""

    keys: bytes
    stored: bytes
    hits: tuple[tuple[int, bytes], ...]
    now: float


def batch(keys: list[bytes], stored: list[Stored], hits: dict[bytes, int], now: float) -> Batch:
    """The batch of `stored` answers under `keys` (one each) and of `hits` (a count per key)."""
    by_count = groupby(sorted(hits.items(), key=itemgetter(1)), key=itemgetter(1))
    counted = tuple((count, b"".join(key for key, _ in group)) for count, group in by_count)
    return Batch(b"".join(keys), orjson.dumps(stored), counted, now)


class Writer:
    """Writes batches to the cache over its own connection `db`, keeping the bytes the file stores (`stored`) under
    `max_bytes` by evicting the least recently used answers."""

    def __init__(self, db: sqlite3.Connection, stored: int, max_bytes: int):
        self.db = db
        self.stored = stored
        self.max_bytes = max_bytes
        self._thread: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def hand(self, batch: Batch) -> None:
        """Have the writer's thread write `batch` once the one before is written (raising what that one raised)."""
        self.settle()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="chainette-cache")
        self._writing = self._thread.submit(self._write, batch)

    def settle(self) -> None:
        """Wait until the batch handed on last is written; raise the sqlite3.Error its writing raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """Stop the thread once the batch it writes is written, then close the connection (that batch's error, if any, is
        not raised: `settle` first to hear it)."""
        if self._thread is not None:
            self._thread.shutdown()
        self._writing = None
        self.db.close()

    def _write(self, batch: Batch) -> None:
        with transaction(self.db) as db:
            if batch.keys:
                values = {"keys": batch.keys, "stored": batch.stored, "now": batch.now}
                db.execute(INSERT, values)
                self.stored += int(db.execute(SIZE, values).fetchone()[0])
            for count, keys in batch.hits:
                db.execute(TOUCH, {"keys": keys, "count": count, "now": batch.now})
            if self.stored > self.max_bytes:
                self.stored = evict(db, self.max_bytes)


def evict(db: sqlite3.Connection, max_bytes: int) -> int:
    """Delete the least recently used answers while the file holds more than `max_bytes` (other runs' answers counted);
    the bytes it holds then."""
    stored = stored_bytes(db)
    while stored > max_bytes:
        (entries,) = db.execute("SELECT COUNT(*) FROM answers").fetchone()
        share = (stored - max_bytes * EVICT_TO) / stored
        db.execute("DELETE FROM answers WHERE id IN (SELECT id FROM answers ORDER BY used LIMIT ?)", (max(1, int(entries * share)),))
        stored = stored_bytes(db)
    return stored


def stored_bytes(db: sqlite3.Connection) -> int:
    """The bytes of every stored answer."""
    (stored,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM answers").fetchone()
    return int(stored)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction on `db`, taken at once (BEGIN IMMEDIATE), committed at the end of the block or rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.commit()
