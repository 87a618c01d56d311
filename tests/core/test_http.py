"""The shared HTTP client against the loopback fake server: every failure classified for the retry policy."""

from __future__ import annotations

import socket

import httpx2
import pytest

from chainette import EngineError, RetryableError, RowError, register_engine
from chainette.http import CONNECT_TIMEOUT, JsonHttpClient, async_client, bearer, error_message
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


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx2.Response(400, json={"error": {"message": "schema not supported", "type": "BadRequestError"}}), "schema not supported"),
        (httpx2.Response(401, json={"error": "Unauthorized"}), "Unauthorized"),
        (httpx2.Response(500, text="upstream exploded"), "upstream exploded"),
        (httpx2.Response(502, text=""), "Bad Gateway"),
        (httpx2.Response(422, json={"detail": "bad"}), "{'detail': 'bad'}"),
    ],
)
def test_error_message_of_openai_vllm_and_plain_bodies(response, expected):
    assert error_message(response) == expected


def test_bearer_header():
    assert bearer("sk-1") == {"Authorization": "Bearer sk-1"}
    assert bearer(None) is None
    assert bearer("") is None


async def test_async_client_follows_the_engine_options():
    config = register_engine("e", backend="fake", model="m", timeout=30.0, max_concurrency=7)
    client = async_client(config.options, base_url="http://x.test/v1", headers=bearer("k"))
    assert client.timeout == httpx2.Timeout(30.0, connect=CONNECT_TIMEOUT)
    assert client.base_url == "http://x.test/v1/"
    assert client.headers["Authorization"] == "Bearer k"
    await client.aclose()
    short = async_client(register_engine("s", backend="fake", model="m", timeout=2.0).options)
    assert short.timeout == httpx2.Timeout(2.0)
    await short.aclose()


async def test_engines_share_one_tls_context(monkeypatch):
    """Loading the trusted roots takes tens of ms: each engine's client reuses the ones loaded first, and a client
    for an https endpoint still verifies certificates."""
    import ssl

    from chainette import http

    loaded = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: loaded.append(1) or real(*a, **k))
    http.tls_context.cache_clear()
    options = register_engine("e", backend="fake", model="m").options
    clients = [async_client(options, base_url=f"https://h{n}.test") for n in range(3)]
    assert len(loaded) <= 1
    assert http.tls_context().verify_mode == ssl.CERT_REQUIRED and http.tls_context().check_hostname
    for client in clients:
        await client.aclose()


def test_paths_join_before_an_endpoint_query_string():
    from chainette.http import join_url, split_query

    assert join_url("http://h/v1/?api-key=T&x=1", "/models") == "http://h/v1/models?api-key=T&x=1"
    assert join_url("http://u:p@h:8000", "/api/chat") == "http://u:p@h:8000/api/chat"
    assert split_query("http://h/v1?api-key=a%2Bb&flag=") == ("http://h/v1", {"api-key": "a+b", "flag": ""})


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms", "x-ratelimit-remaining-requests": "9"}, 0.02),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "1m2.5s",
            },
            62.5,
        ),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, None),
        ({"retry-after": "3", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 3.0),
    ],
)
def test_a_429_without_retry_after_waits_for_the_spent_rate_limit_to_reset(headers, wait):
    """OpenAI's rate-limit headers (x-ratelimit-remaining-*, x-ratelimit-reset-* as durations such as 12ms or 6m0s, per
    the OpenAI rate-limits guide) say how long a spent limit lasts; Retry-After wins when the server sends it."""
    from chainette.errors import parse_retry_after

    assert parse_retry_after(headers) == (pytest.approx(wait) if wait is not None else None)


def test_anthropics_rate_limit_resets_are_times():
    """Anthropic's anthropic-ratelimit-*-reset headers give the RFC 3339 time the limit resets at."""
    from datetime import datetime, timedelta, timezone

    from chainette.errors import rate_limit_reset

    soon = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    spent = {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": soon}
    assert 25 < rate_limit_reset(spent) <= 30
    assert rate_limit_reset({**spent, "anthropic-ratelimit-requests-reset": "2020-01-01T00:00:00Z"}) == 0.0
    assert rate_limit_reset({**spent, "anthropic-ratelimit-requests-remaining": "3"}) is None


@pytest.mark.parametrize(
    ("status", "headers", "held"),
    [
        (200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, [2.0]),
        (200, {"x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "2s"}, []),
        (429, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, []),
    ],
)
async def test_an_answer_saying_a_limit_is_spent_holds_the_engines_next_requests(engine, status, headers, held):
    """A successful answer whose rate-limit headers say a limit is spent tells the request's engine (policy.LIMIT_SPENT)
    how long until it resets; a 429 is left to the retry policy; outside a request nothing is told."""
    from chainette.policy import LIMIT_SPENT

    told: list[float] = []
    transport = httpx2.MockTransport(lambda request: httpx2.Response(status, json={}, headers=headers))
    client = async_client(engine.options, base_url="http://h", transport=transport)
    await client.get("/x")  # no request of the core's: no one to tell
    token = LIMIT_SPENT.set(told.append)
    try:
        await client.get("/x")
    finally:
        LIMIT_SPENT.reset(token)
        await client.aclose()
    assert told == pytest.approx(held)
