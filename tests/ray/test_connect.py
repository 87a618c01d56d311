"""Connecting to a cluster: a per-client server that dies at start-up (Ray's ConnectionAbortedError) is tried again a
bounded number of times; other failures, and the last try, end in one paragraph naming the target."""

from __future__ import annotations

import pytest

from chainette import ChainetteError
from chainette_ray import runner
from chainette_ray.target import parse_target

ray = pytest.importorskip("ray")


def scripted_init(monkeypatch, failures: list[Exception]) -> list[str]:
    """Replace ray.init by one raising `failures` in turn, then succeeding; return the addresses it was called with."""
    calls: list[str] = []

    def init(address: str, **settings: object) -> None:
        calls.append(address)
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(runner.time, "sleep", lambda seconds: None)
    return calls


def test_a_client_server_dying_at_start_up_is_tried_again(monkeypatch):
    calls = scripted_init(monkeypatch, [ConnectionAbortedError("Initialization failure from server")] * 2)
    with runner.connected(parse_target("ray://head:10001")):
        pass
    assert calls == ["ray://head:10001"] * 3


def test_after_the_last_try_the_error_names_the_target(monkeypatch):
    calls = scripted_init(monkeypatch, [ConnectionAbortedError("Initialization failure from server")] * runner.CONNECT_TRIES)
    failing = pytest.raises(ChainetteError, match=r"--on ray://head:10001: cannot connect .*Initialization failure")
    with failing, runner.connected(parse_target("ray://head:10001")):
        pass
    assert len(calls) == runner.CONNECT_TRIES


def test_other_connection_failures_are_not_tried_again(monkeypatch):
    calls = scripted_init(monkeypatch, [ConnectionError("refused")])
    with pytest.raises(ChainetteError, match="refused"), runner.connected(parse_target("ray://head:10001")):
        pass
    assert len(calls) == 1
