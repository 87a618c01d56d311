"""The gemini backend's engine options (`GeminiOptions`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from chainette.engines import EngineOptions

DEFAULT_KEY_ENV = "GEMINI_API_KEY"


class GeminiOptions(EngineOptions):
    """Options of the gemini backend (the Gemini Developer API; Vertex AI is not supported)."""

    key_env: ClassVar[str | None] = DEFAULT_KEY_ENV
    cache_neutral: ClassVar[frozenset[str]] = EngineOptions.cache_neutral | {"api_version"}
    same_error_advice: ClassVar[str] = (
        "Check the engine's model name (gemini-2.5-flash, ...) and that the output model's schema is one Gemini takes."
    )

    max_concurrency: int = Field(32, ge=1, description="Requests in flight at once for this engine.")
    api_version: str = Field("v1beta", description="The Gemini API version in the request paths (v1beta carries JSON-schema output).")
    thinking_budget: int | None = Field(
        None,
        ge=-1,
        description="Tokens the model may spend thinking (0: off where the model allows it, -1: the model decides). None: the model's default.",
    )
    include_thoughts: bool = Field(False, description="Ask for the model's thought summaries, kept as the step's reasoning.")
