"""Fixtures shared by every test: a clean engine registry, plugin cache and warning memo; a response cache of the
test's own (never the user's); the loopback fake server; every byte a run wrote, to search for planted secrets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
