"""Shared JSON-over-HTTP transport for backends (install `chainette-core[http]`, which brings httpx2).

It sizes the connection pool to the engine's concurrency and turns every failure into the
error classes the core's retry policy understands, so that a backend only builds payloads.
A backend that talks through another client (an SDK over httpx2) shares `async_client`,
`bearer` and `error_message`. An endpoint may carry a query string (`http://h/v1?api-key=TOKEN`): it is
sent with every request (`split_query`, `join_url`), never shown (`chainette.secrets.public_url`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx2
import orjson

from chainette.connections import pooled_transport
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import (
    RATE_LIMITS,
    EngineError,
    RetryableError,
    RowError,
    error_code,
    error_for_status,
    parse_retry_after,
    rate_limit_reset,
)
from chainette.policy import LIMIT_SPENT
from chainette.secrets import public_url

if TYPE_CHECKING:
    import ssl

CONNECT_TIMEOUT = 10.0
JSON_HEADERS = {"Content-Type": "application/json"}
SPENT_NAMES = frozenset(remaining.encode() for remaining, _ in RATE_LIMITS)  # a rate limit's remaining count


class JsonHttpClient:
    """POSTs and GETs JSON against one base URL on behalf of one engine."""

    def __init__(
        self,
        config: EngineConfig[EngineOptions],
        base_url: str,
        headers: dict[str, str] | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ):
        self.engine = config.name
        base, query = split_query(base_url)
        self.base_url = base.rstrip("/")
        self._client = async_client(config.options, base_url=self.base_url, headers=headers, params=query, transport=transport)

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` as JSON and return the decoded JSON answer; failures raise BackendErrors."""
        return await self._send("POST", path, payload)

    async def get(self, path: str) -> dict[str, Any]:
        """GET `path` and return the decoded JSON answer; failures raise BackendErrors."""
        return await self._send("GET", path, None)

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            content = None if payload is None else orjson.dumps(payload)
            response = await self._client.request(method, path, content=content, headers=JSON_HEADERS if content else None)
        except httpx2.TimeoutException:
            raise RetryableError(f"engine '{self.engine}': {url} did not answer in time", kind="timeout") from None
        except httpx2.ConnectError as exc:
            raise RetryableError(f"engine '{self.engine}': cannot connect to {url}: {exc}", kind="connection") from None
        except httpx2.TransportError as exc:
            raise RetryableError(f"engine '{self.engine}': connection to {url} failed: {exc}", kind="transport") from None
        if response.status_code >= 400:
            raise error_for_status(
                response.status_code,
                error_message(response),
                engine=self.engine,
                retry_after=parse_retry_after(response.headers),
                code=error_code(response.content),
            )
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise RetryableError(
                f"engine '{self.engine}': {url} answered with a body that is not JSON", kind="bad_response", raw=response.text[:2000]
            ) from None
        if not isinstance(body, dict):
            raise RowError(
                f"engine '{self.engine}': {url} answered with JSON that is not an object", kind="bad_response", raw=response.text[:2000]
            )
        return body

    async def aclose(self) -> None:
        await self._client.aclose()


def async_client(
    options: EngineOptions,
    *,
    base_url: str = "",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client for one engine: `options.timeout` per request (at most CONNECT_TIMEOUT of it to connect),
    max_concurrency connections (in pools of a few: chainette.connections), through `transport` when given; `params`
    are added to every request's query string. An answer whose rate-limit headers say a limit is spent holds the
    engine's next requests until it resets (`watch_limits`)."""
    pool = options.max_concurrency
    return httpx2.AsyncClient(
        base_url=base_url,
        headers=headers,
        params=params,
        timeout=request_timeout(options),
        limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
        transport=transport if transport is not None else pooled_transport(pool, tls_context()),
        verify=tls_context(),
        event_hooks={"response": [watch_limits]},
    )


async def watch_limits(response: httpx2.Response) -> None:
    """Tell the request's engine (policy.LIMIT_SPENT) how long until a rate limit resets when a successful answer's headers
    say it is spent (errors.RATE_LIMITS): its next requests wait for it instead of meeting a 429. A 429 is the retry
    policy's."""
    spent = LIMIT_SPENT.get()
    if spent is None or response.status_code >= 400 or not _says_spent(response.headers):
        return
    seconds = rate_limit_reset(response.headers)
    if seconds:
        spent(seconds)


def _says_spent(headers: httpx2.Headers) -> bool:
    """Whether a rate limit's remaining count is 0: one pass over the raw headers (most answers send none of them)."""
    return any(value == b"0" and name.lower() in SPENT_NAMES for name, value in headers.raw)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every engine's client shares: httpx2's own defaults (its trusted roots, SSL_CERT_FILE and
    SSL_CERT_DIR honoured), loaded once per process instead of once per client (loading them takes tens of ms)."""
    return httpx2.create_ssl_context()


def request_timeout(options: EngineOptions) -> httpx2.Timeout:
    """`options.timeout` per request, at most CONNECT_TIMEOUT of it to connect."""
    return httpx2.Timeout(options.timeout, connect=min(CONNECT_TIMEOUT, options.timeout))


def split_query(url: str) -> tuple[str, dict[str, str]]:
    """`url` without its query string (and fragment), and the query's parameters: a base URL that paths can be added to."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment="")), dict(parse_qsl(parts.query, keep_blank_values=True))


def join_url(base_url: str, path: str) -> str:
    """`path` (`/models`) added to the path of `base_url`, its query string kept at the end (`http://h/v1/models?api-key=T`)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))


def bearer(key: str | None) -> dict[str, str] | None:
    """The `Authorization: Bearer` header for an API key, or None without one."""
    return {"Authorization": f"Bearer {key}"} if key else None


def error_message(response: httpx2.Response) -> str:
    """The server's error text: OpenAI's `{"error": {"message"}}`, a plain `{"error": "..."}` (vLLM, Ollama), or the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:500]


def list_models(
    config: EngineConfig[EngineOptions],
    headers: dict[str, str] | None = None,
    *,
    server: str = "endpoint",
    advice: str = "Start the server, or fix endpoint=.",
) -> list[str] | None:
    """The model ids `GET {endpoint}/models` lists, or None when the server has no such list (some compatible servers).

    Raises EngineError at once when the endpoint does not answer (the message calls it `server` and ends with
    `advice`), or refuses the key (401, 403): a run then stops before its first row instead of retrying every request.
    """
    assert config.endpoint is not None
    url = join_url(config.endpoint, "/models")
    shown, listing = public_url(config.endpoint), public_url(url)
    try:
        response = httpx2.get(url, headers=headers, timeout=min(CONNECT_TIMEOUT, config.options.timeout))
    except httpx2.HTTPError as exc:
        raise EngineError(
            f"Engine '{config.name}': the {server} {shown} does not answer ({type(exc).__name__}: {exc}). {advice}",
            kind="unreachable",
        ) from None
    if response.status_code in (401, 403):
        raise EngineError(
            f"Engine '{config.name}': {listing} answered HTTP {response.status_code}: {error_message(response)}. "
            "Check the engine's api_key or api_key_env.",
            kind="authentication",
        )
    try:
        return [str(model["id"]) for model in response.json()["data"]] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        return None
