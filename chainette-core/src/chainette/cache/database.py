"""The response cache's database: one SQLite file in WAL mode (standard library), shared by every run of the user.

Writes (answers, and the hits that mark answers as used) are buffered and committed in batches (once `FLUSH_EVERY`
are buffered, `FLUSH_BYTES` of answers are, or `FLUSH_SECONDS` have passed, and at each `flush`), each batch one
transaction (chainette.cache.writer), written in its own thread while an event loop goes on and at once outside one:
the buffers stay small on any mix of hits and answers, and a kill -9 loses the writes of the batches in progress,
never the file. Two runs may use the file at once (WAL: readers never wait; a writer waits up to `BUSY_SECONDS` for
the other). Within an event loop, look-ups share one read transaction, ended by each flush, and the loop flushes
`FLUSH_SECONDS` after a batch or a read transaction began even when no call follows (a quiet run holds neither its
answers nor the log); so a run sees what another stored about a second later than it would see it otherwise. Entries
carry when they were last used, and the least recently used go once the file holds more than its size cap. A database
that cannot be read or written any more (a damaged file among others) is turned off, with one `notice`, and the run
goes on.
"""

from __future__ import annotations

import asyncio
from asyncio import _get_running_loop
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
import shlex
import sqlite3
import time

import orjson

from chainette.cache.writer import EACH_KEY, KEY_BYTES, Stored, Writer, batch, stored_bytes, transaction
from chainette.client import Answer, Usage

APPLICATION_ID = 0x43484E54  # "CHNT": marks the file as chainette's response cache
SCHEMA_VERSION = 1
BUSY_SECONDS = 10.0
FLUSH_EVERY = 16384
FLUSH_BYTES = 4 * 1024 * 1024
FLUSH_SECONDS = 1.0
CHECKPOINT_PAGES = 10_000  # the write-ahead log is copied into the file past 40 MB (SQLite's default: 4 MB)
PAGE_CACHE_KIB = 8 * 1024  # SQLite's page cache per connection (its default: 2 MB), the index's pages kept between batches

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  id INTEGER PRIMARY KEY,
  key BLOB NOT NULL UNIQUE,
  backend TEXT NOT NULL,
  model TEXT NOT NULL,
  created REAL NOT NULL,
  used REAL NOT NULL,
  hits INTEGER NOT NULL DEFAULT 0,
  size INTEGER NOT NULL,
  answer BLOB NOT NULL
);
"""

LOOK_UP = f"SELECT key, answer FROM answers WHERE key IN ({EACH_KEY})"


class CacheUnavailable(Exception):
    """The cache file cannot be used (someone else's, unreadable); the message says which and why, `advice` what to do."""

    advice = "set CHAINETTE_CACHE_DIR to use another folder"


class CacheDamaged(CacheUnavailable):
    """The cache file at `path` is damaged (a page overwritten, not a database at all): only removing it helps."""

    def __init__(self, path: Path, why: str | sqlite3.Error):
        super().__init__(f"{path} is damaged ({why})")
        self.path = path
        self.advice = f"`{removal_command(path)}` removes the damaged file"


def removal_command(path: Path) -> str:
    """The command that removes the cache file at `path`."""
    return f"chainette cache clear --cache-dir {shlex.quote(str(path.parent))}"


def unavailable(path: Path, exc: sqlite3.Error, doing: str) -> CacheUnavailable:
    """What `exc`, raised while `doing` ("read", "write") the file at `path`, means: CacheDamaged when SQLite found the
    file damaged (SQLITE_CORRUPT and SQLITE_NOTADB, which Python raises as a plain DatabaseError), else CacheUnavailable."""
    if type(exc) is sqlite3.DatabaseError:
        return CacheDamaged(path, exc)
    return CacheUnavailable(f"cannot {doing} {path} ({exc})")


def turned_off(problem: CacheUnavailable) -> str:
    """The notice of a run that goes on without the cache because of `problem`."""
    return f"response cache: {problem}; the run goes on without the cache ({problem.advice})."


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer: its text (valid for the step's output model when stored), reasoning, and the tokens it cost."""

    text: str
    reasoning: str | None
    usage: Usage


@dataclass(frozen=True)
class ModelFigures:
    """One model's share of the cache, for `chainette cache info`."""

    backend: str
    model: str
    entries: int
    hits: int
    bytes: int


class ResponseCache:
    """The store at `path`, opened for one run (or one `chainette cache` command). Not thread-safe: one event loop uses it."""

    def __init__(self, path: Path, *, max_bytes: int, notice: Callable[[str], None] = lambda message: None):
        self.path = path
        self.notice = notice
        self.writable = True
        self._keys: list[bytes] = []  # of the answers waiting for the next batch
        self._answers: list[Stored] = []
        self._answer_bytes = 0
        self._hits: dict[bytes, int] = {}
        self._flushed_at = time.monotonic()
        self._due: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        self.db: sqlite3.Connection | None = _connect(path)
        try:
            stored = stored_bytes(self.db)
            self._writer = Writer(_connect(path), stored, max_bytes)
        except sqlite3.Error as exc:
            self.db.close()
            raise unavailable(path, exc, "read") from None
        except CacheUnavailable:
            self.db.close()
            raise

    def get(self, key: bytes) -> CachedAnswer | None:
        """The answer stored under `key`, or None; a hit is counted (written with the next batch)."""
        return self.get_many([key])[0]

    def get_many(self, keys: list[bytes]) -> list[CachedAnswer | None]:
        """The answer stored under each of `keys` (looked up in one query), or None; each hit is counted (written with the
        next batch)."""
        db = self.db
        if db is None:
            return [None] * len(keys)
        try:
            due = self._due
            if due is None or due[0] is not _get_running_loop() or not db.in_transaction:
                self._hold_snapshot(db)
            found = dict(db.execute(LOOK_UP, {"keys": b"".join(keys)}).fetchall())
        except sqlite3.Error as exc:
            self._turn_off(unavailable(self.path, exc, "read"))
            return [None] * len(keys)
        if not found:
            return [None] * len(keys)
        answers = [self._hit(key, found.get(key)) for key in keys]
        self._flush_when_due()
        return answers

    def _hit(self, key: bytes, stored: bytes | None) -> CachedAnswer | None:
        """The answer `stored` under `key` (None: nothing), counted as a hit; an entry this version cannot read is a miss:
        the answer is asked again and replaced."""
        if stored is None:
            return None
        try:
            text, reasoning, *tokens = orjson.loads(stored)
            usage = Usage(*tokens)
        except (ValueError, TypeError):
            return None
        self._hits[key] = self._hits.get(key, 0) + 1
        return CachedAnswer(text, reasoning, usage)

    def _hold_snapshot(self, db: sqlite3.Connection) -> None:
        """Begin the read transaction the look-ups share (one instead of one per look-up: a third of a look-up's cost),
        once the running event loop is to flush, which ends it; outside a loop, none (nothing would end it), and one
        begun in a loop that has ended is ended."""
        if self._flush_later():
            if not db.in_transaction:
                db.execute("BEGIN")
        elif db.in_transaction:
            self._end_snapshot()

    def _flush_later(self) -> bool:
        """Have the running event loop flush `FLUSH_SECONDS` from now, unless it is to already; False outside a loop."""
        loop = _get_running_loop()
        if loop is None:
            return False
        if self._due is None or self._due[0] is not loop:  # a flush set in a loop that has ended would never come
            self._due = (loop, loop.call_later(FLUSH_SECONDS, self._write, False))
        return True

    def _end_snapshot(self) -> None:
        """End the look-ups' read transaction, if one is open: the next look-up sees what was stored since, here or by
        another run, and the write-ahead log is free to be copied into the file past it."""
        if self.db is None or not self.db.in_transaction:
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._turn_off(unavailable(self.path, exc, "read"))

    def put(self, key: bytes, backend: str, model: str, answer: CachedAnswer | Answer) -> None:
        """Store `answer` (its text, reasoning and usage) under `key` with the next batch (replacing what the key held)."""
        if self.db is None or not self.writable:
            return
        assert len(key) == KEY_BYTES, "a key is a sha256 digest"
        text, reasoning, usage = answer.text, answer.reasoning, answer.usage
        self._keys.append(key)
        self._answers.append(
            (backend, model, (text, reasoning, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens))
        )
        self._answer_bytes += len(key) + len(text) + (len(reasoning) if reasoning else 0)
        due = self._due
        if due is None or due[0] is not _get_running_loop():
            self._flush_later()
        self._flush_when_due()

    def _flush_when_due(self) -> None:
        """Flush once `FLUSH_EVERY` answers and hits or `FLUSH_BYTES` of answers are buffered, or `FLUSH_SECONDS` after
        the last flush; within an event loop, without waiting for the batch to be written."""
        if (
            len(self._answers) + len(self._hits) >= FLUSH_EVERY
            or self._answer_bytes >= FLUSH_BYTES
            or time.monotonic() - self._flushed_at >= FLUSH_SECONDS
        ):
            self._write(wait=_get_running_loop() is None)

    def flush(self) -> None:
        """Write the buffered answers and hits in one transaction (then evict if the file is over its cap); return once
        they are written."""
        self._write(wait=True)

    def _write(self, wait: bool) -> None:
        """End the look-ups' read transaction and hand the buffered answers and hits to the writer (`wait`: until written)."""
        keys, answers, hits = self._keys, self._answers, self._hits
        self._keys, self._answers, self._hits, self._answer_bytes = [], [], {}, 0
        self._flushed_at = time.monotonic()
        if self._due is not None:
            self._due[1].cancel()
            self._due = None
        self._end_snapshot()
        if self.db is None or not self.writable:
            return
        try:
            if answers or hits:
                self._writer.hand(batch(keys, answers, hits, time.time()))
            if wait:
                self._writer.settle()
        except sqlite3.OperationalError as exc:
            self.writable = False
            self.notice(f"response cache {self.path}: answers are no longer stored ({exc}); the run goes on without storing them.")
        except sqlite3.Error as exc:
            self._turn_off(unavailable(self.path, exc, "write"))

    def close(self) -> None:
        """Flush, then close the file."""
        self.flush()
        self._close()

    def _turn_off(self, problem: CacheUnavailable) -> None:
        """Stop using the file for the rest of the run, with a notice saying why."""
        self.notice(turned_off(problem))
        self._close()

    def _close(self) -> None:
        if self.db is not None:
            self._writer.close()
            self.db.close()
        self.db = None

    def check(self) -> None:
        """Raise CacheDamaged when SQLite's quick check finds the file damaged (it reads every page: seconds per GB)."""
        assert self.db is not None
        try:
            (verdict,) = self.db.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.Error as exc:
            raise unavailable(self.path, exc, "read") from None
        if verdict != "ok":  # such as "*** in database main ***\nPage 3: btreeInitPage() returns error code 11"
            raise CacheDamaged(self.path, " ".join(verdict.replace("*** in database main ***", "").split()))

    def figures(self) -> list[ModelFigures]:
        """Entries, hits and bytes per backend and model, most used first; CacheUnavailable when the file cannot be read."""
        assert self.db is not None
        query = "SELECT backend, model, COUNT(*), SUM(hits), SUM(size) FROM answers GROUP BY backend, model ORDER BY SUM(hits) DESC, model"
        try:
            return [ModelFigures(*row) for row in self.db.execute(query)]
        except sqlite3.Error as exc:
            raise unavailable(self.path, exc, "read") from None

    def clear(self, *, model: str | None = None, unused_for: float | None = None) -> int:
        """Delete the answers of `model` (every model when None) not used for `unused_for` seconds (any when None); return how
        many. CacheUnavailable when the file cannot be written."""
        assert self.db is not None
        where: list[str] = ["1"]
        values: list[str | float] = []
        if model is not None:
            where.append("model = ?")
            values.append(model)
        if unused_for is not None:
            where.append("used < ?")
            values.append(time.time() - unused_for)
        self._end_snapshot()
        try:
            with transaction(self.db) as db:
                removed = db.execute(f"DELETE FROM answers WHERE {' AND '.join(where)}", values).rowcount
            with suppress(sqlite3.OperationalError):  # another run has the file open: its pages are reused instead
                self.db.execute("VACUUM")
        except sqlite3.Error as exc:
            raise unavailable(self.path, exc, "write") from None
        return int(removed)


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating when missing) the cache file at `path`, checked to be chainette's; CacheUnavailable if it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise CacheUnavailable(f"cannot open {path} ({exc})") from None
    try:
        (application,) = db.execute("PRAGMA application_id").fetchone()
        (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        if tables and application != APPLICATION_ID:
            raise CacheUnavailable(f"{path} is an SQLite file but not chainette's response cache")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if tables and version != SCHEMA_VERSION:
            raise CacheUnavailable(f"{path} is a cache of another chainette version (format {version}, this one reads {SCHEMA_VERSION})")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        if not tables:
            db.executescript(
                f"BEGIN IMMEDIATE; PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION}; {SCHEMA} COMMIT;"
            )
    except sqlite3.Error as exc:
        db.close()
        raise unavailable(path, exc, "read") from None
    except CacheUnavailable:
        db.close()
        raise
    return db


def remove(path: Path) -> None:
    """Delete the cache file at `path` with its write-ahead log and shared-memory index (those that exist)."""
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        part.unlink(missing_ok=True)
