"""The `openai` backend: the OpenAI API, or any OpenAI-compatible server, through the official SDK.

This module only declares hooks and options; the SDK is imported when the first client is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from chainette.engines import EngineConfig, EngineOptions
from chainette.hookspecs import hookimpl
from chainette.sampling import SamplingParams, map_sampling

if TYPE_CHECKING:
    from chainette_openai.client import OpenAIClient

__version__ = "0.1.0"

SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_completion_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class OpenAIOptions(EngineOptions):
    """Options of the openai backend."""

    max_concurrency: int = Field(32, ge=1, description="Requests in flight at once for this engine.")
    organization: str | None = Field(None, description="OpenAI organization id sent with every request (OpenAI-Organization).")
    project: str | None = Field(None, description="OpenAI project id sent with every request (OpenAI-Project).")


@hookimpl
def engine_options() -> type[EngineOptions]:
    return OpenAIOptions


@hookimpl
def make_client(config: EngineConfig) -> OpenAIClient:
    from chainette_openai.client import OpenAIClient

    return OpenAIClient(config)


@hookimpl
def translate_sampling(config: EngineConfig, sampling: SamplingParams) -> dict[str, Any]:
    return map_sampling(sampling, SAMPLING_FIELDS, engine=config.name)
