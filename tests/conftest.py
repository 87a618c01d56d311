"""Fixtures shared by every test: a clean engine registry, plugin cache and warning memo; the loopback fake server."""

from __future__ import annotations

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


@pytest.fixture
def fake_server():
    """A FakeServer on 127.0.0.1 (OpenAI and Ollama wire formats), serving the model 'fake-model'."""
    from chainette.testing import FakeServer

    with FakeServer() as server:
        yield server
