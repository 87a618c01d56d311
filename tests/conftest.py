"""Fixtures shared by every test: a clean engine registry, plugin cache and warning memo; a response cache of the
test's own (never the user's); the loopback fake server; every byte a run wrote, to search for planted secrets; garbage over an SQLite file's pages."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
import sqlite3

import pytest

from chainette import sampling
from chainette.engines import clear_engines
from chainette.plugins import reset_plugins


def _reset() -> None:
    clear_engines()
    reset_plugins()
    sampling._warned.clear()


@pytest.fixture(autouse=True)
def _clean_registry():
    _reset()
    yield
    _reset()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """The folder of this test's response cache, empty when the test starts (CHAINETTE_CACHE_DIR, for subprocesses too)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CHAINETTE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def fake_server():
    """A FakeServer on 127.0.0.1 (OpenAI and Ollama wire formats), serving the model 'fake-model'."""
    from chainette.testing import FakeServer

    with FakeServer() as server:
        yield server


@pytest.fixture
def every_byte() -> Callable[[Path], bytes]:
    """A function returning the bytes of every file under a folder, in path order (to search for planted secrets)."""
    return lambda folder: b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def _damage(path: Path, name: str | None = None) -> None:
    """Write garbage over the pages of the table or index `name` in the SQLite file at `path` (over every page past the
    first when None), as a failing disk would."""
    with closing(sqlite3.connect(path)) as db:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        first = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0] if name else 2
    with open(path, "r+b") as file:
        file.seek((first - 1) * page_size)
        file.write(b"garbage!" * (page_size // 8) * (1 if name else pages - 1))


@pytest.fixture
def damage() -> Callable[..., None]:
    """A function writing garbage over pages of an SQLite file: `damage(path, name)` over the table or index `name`,
    `damage(path)` over every page past the first (the header and schema page stay readable)."""
    return _damage
