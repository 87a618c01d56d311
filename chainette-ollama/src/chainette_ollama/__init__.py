"""Chainette backend for Ollama's native REST API: `POST /api/chat` with the output schema as `format`.

This module holds the hooks (the options model is `chainette_ollama.options`); the HTTP client is imported when an engine
starts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.media import refuse_kinds
from chainette.sampling import SamplingParams, map_sampling
from chainette.secrets import public_url
from chainette_ollama.options import DEFAULT_PORT, DEFAULT_URL, OllamaOptions

if TYPE_CHECKING:
    from chainette_ollama.client import OllamaClient

SAMPLING_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_tokens": "num_predict",
    "stop": "stop",
    "repetition_penalty": "repeat_penalty",
}


def base_url(value: str | None, *, source: str = "OLLAMA_HOST") -> str:
    """A full `scheme://[userinfo@]host:port[/path][?query]` URL from an Ollama address that may lack the scheme or port,
    as OLLAMA_HOST may; credentials and query string are kept (they go with every request)."""
    value = (value or "").strip()
    if not value:
        return DEFAULT_URL
    scheme, _, rest = value.partition("://")
    port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT) if rest else DEFAULT_PORT
    if not rest:
        scheme, rest = "http", value
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port or port
    except ValueError:
        raise ConfigError(
            f"{source} {public_url(value)!r} is not a valid Ollama address; expected host, host:port or http(s)://host:port."
        ) from None
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{userinfo}{host}:{port}{path}{query}"


@hookimpl
def backend_aliases() -> list[str]:
    return ["ollama_api"]


@hookimpl
def engine_options() -> type[EngineOptions]:
    return OllamaOptions


@hookimpl
def ensure_running(config: EngineConfig[OllamaOptions]) -> str:
    """The server's URL: the engine's endpoint, else OLLAMA_HOST, else the local default. Reachability is not checked here."""
    if config.endpoint:
        return base_url(config.endpoint, source=f"engine '{config.name}' endpoint")
    return base_url(os.environ.get("OLLAMA_HOST"))


@hookimpl
def check_input_media(config: EngineConfig[OllamaOptions], fields: dict[str, str]) -> None:
    """Ollama's /api/chat takes images only (the message's `images`)."""
    why = (
        "Ollama's /api/chat takes images only (a message's images list); use a backend that takes it, or leave the field out of the prompt."
    )
    refuse_kinds(config.name, fields, {"document": why, "audio": why})


@hookimpl
def make_client(config: EngineConfig[OllamaOptions]) -> OllamaClient:
    from chainette_ollama.client import OllamaClient

    return OllamaClient(config)


@hookimpl
def translate_sampling(config: EngineConfig[OllamaOptions], sampling: SamplingParams) -> dict[str, Any]:
    """Ollama's `options` object; SamplingParams.extra merges in last (e.g. num_ctx)."""
    return map_sampling(sampling, SAMPLING_NAMES, engine=config.name)
