"""The ollama backend's engine options (`OllamaOptions`) and its default address."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from chainette.engines import EngineOptions

DEFAULT_PORT = 11434
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


class OllamaOptions(EngineOptions):
    """Options of the `ollama` backend."""

    cache_neutral: ClassVar[frozenset[str]] = EngineOptions.cache_neutral | {"keep_alive"}

    max_concurrency: int = Field(4, ge=1, description="Requests in flight; Ollama serves few at once, the rest queue.")
    think: bool | Literal["low", "medium", "high", "max"] | None = Field(None, description="Thinking on/off, or its effort level.")
    keep_alive: str | int | None = Field(None, description="How long the model stays loaded ('5m', seconds, 0, -1).")
