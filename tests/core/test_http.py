"""The shared HTTP client against the loopback fake server: every failure classified for the retry policy."""

from __future__ import annotations

import socket

import pytest

from chainette import EngineError, RetryableError, RowError, register_engine
from chainette.http import JsonHttpClient
from chainette.testing import FakeServer, Fault

CHAT = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "hi"}],
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    },
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def engine():
    return register_engine("e", backend="fake", model="fake-model", timeout=0.5)


async def test_post_returns_json(fake_server, engine):
    client = JsonHttpClient(engine, f"{fake_server.base_url}/v1", headers={"X-Test": "1"})
    body = await client.post("/chat/completions", CHAT)
    await client.aclose()
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert fake_server.requests[0]["headers"]["X-Test"] == "1"


@pytest.mark.parametrize(
    ("fault", "error", "kind"),
    [
        (Fault(status=429, retry_after=2), RetryableError, "http_429"),
        (Fault(status=503), RetryableError, "http_503"),
        (Fault(status=400), RowError, "http_400"),
        (Fault(status=401), EngineError, "authentication"),
        (Fault(status=404), EngineError, "not_found"),
        (Fault(hang=2), RetryableError, "timeout"),
        (Fault(drop=True), RetryableError, "transport"),
    ],
)
async def test_failures_are_classified(fake_server, engine, fault, error, kind):
    fake_server.fail_next(fault)
    client = JsonHttpClient(engine, f"{fake_server.base_url}/v1")
    with pytest.raises(error) as excinfo:
        await client.post("/chat/completions", CHAT)
    await client.aclose()
    assert excinfo.value.kind == kind
    assert type(excinfo.value) is error
    if fault.retry_after:
        assert excinfo.value.retry_after == 2


async def test_connection_refused_names_the_url(engine):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    client = JsonHttpClient(engine, url)
    with pytest.raises(RetryableError) as excinfo:
        await client.post("/chat/completions", CHAT)
    await client.aclose()
    assert excinfo.value.kind == "connection"
    assert f"{url}/chat/completions" in str(excinfo.value)


async def test_error_message_comes_from_the_body(engine):
    with FakeServer() as server:
        server.fail_next(Fault(status=400, body={"error": {"message": "schema not supported"}}))
        client = JsonHttpClient(engine, f"{server.base_url}/v1")
        with pytest.raises(RowError, match="HTTP 400: schema not supported"):
            await client.post("/chat/completions", CHAT)
        await client.aclose()
