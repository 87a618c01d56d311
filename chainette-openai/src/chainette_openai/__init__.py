"""The `openai` backend: the OpenAI API, or any OpenAI-compatible server, through the official SDK.

This module only declares hooks and options; the SDK is imported when the first client is made.
"""

from __future__ import annotations

from pathlib import Path
import re
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Literal
import warnings

from pydantic import Field, model_validator

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.sampling import SamplingParams, map_sampling
from chainette_openai.profiles import ProfileName, StructuredOutput, TokenLimit, profile_name, resolve

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chainette_openai.batch import OpenAIBatchClient
    from chainette_openai.client import OpenAIClient

__version__ = "0.1.0"

DEFAULT_KEY_ENV = "OPENAI_API_KEY"

CHAT_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "n": "n",
}
# The Responses API has no stop strings, seed, penalties or n (the core then sends n requests).
RESPONSES_FIELDS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_output_tokens"}

MAX_STOP = 4  # the OpenAI API's limit on stop sequences
BATCH_DISCOUNT = 0.5  # the Batch API costs half the price of online requests

# USD per million input and output tokens, from OpenAI's price list (standard tier, 2025).
# Engines override them with price_per_million_input/output; unknown models get no cost estimate.
PRICES = {
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


class OpenAIOptions(EngineOptions):
    """Options of the openai backend."""

    key_env: ClassVar[str | None] = DEFAULT_KEY_ENV
    cache_neutral: ClassVar[frozenset[str]] = EngineOptions.cache_neutral | {"organization", "project"}
    same_error_advice: ClassVar[str] = (
        "On an OpenAI-compatible server, set the engine's profile= to the server's preset (llama-cpp, ollama, tgi, ...) "
        "or to 'auto' to probe it."
    )

    max_concurrency: int = Field(32, ge=1, description="Requests in flight at once for this engine.")
    organization: str | None = Field(None, description="OpenAI organization id sent with every request (OpenAI-Organization).")
    project: str | None = Field(None, description="OpenAI project id sent with every request (OpenAI-Project).")
    api: Literal["responses", "chat"] | None = Field(
        None,
        description="'responses' (the Responses API) or 'chat' (Chat Completions). Default: responses on the OpenAI API, "
        "chat on a compatible server (endpoint=).",
    )
    profile: ProfileName | None = Field(
        None,
        description="How the server wants the schema and the token limit: openai, generic, vllm, sglang, lm-studio, ollama, "
        "llama-cpp, tgi, or auto (probe the server at start). Default: openai on the OpenAI API, generic on a compatible server.",
    )
    structured_output: StructuredOutput | None = Field(
        None,
        description="Overrides the profile: json_schema (response_format.json_schema), json_object (the schema in "
        "response_format.schema), json_object_value (in response_format.value), or prompt (the schema only in the prompt).",
    )
    token_limit: TokenLimit | None = Field(
        None, description="Overrides the profile: the field that carries max_tokens, max_completion_tokens or max_tokens."
    )
    strict: bool | None = Field(
        None, description="Overrides the profile: OpenAI's strict mode for json_schema (on with the openai profile, off otherwise)."
    )

    @model_validator(mode="after")
    def _responses_take_json_schema(self) -> OpenAIOptions:
        if self.api == "responses" and self.structured_output in ("json_object", "json_object_value"):
            raise ValueError(f"structured_output={self.structured_output!r} is a Chat Completions form: use api='chat' with it")
        return self


def api_of(config: EngineConfig[OpenAIOptions]) -> str:
    """The API an engine's requests use: its `api` option, else responses on the OpenAI API and chat on a compatible server."""
    return config.options.api or ("chat" if config.endpoint else "responses")


@hookimpl
def engine_options() -> type[EngineOptions]:
    return OpenAIOptions


@hookimpl
def ensure_running(config: EngineConfig[OpenAIOptions], run_dir: Path | None, cancelled: threading.Event) -> str | None:
    """For an OpenAI-compatible server (an engine with endpoint=), check at once that it answers and takes the key;
    warn when its model list lacks the engine's model; with profile auto, probe it. The OpenAI API itself is not probed."""
    if not config.endpoint:
        return None
    from chainette.engines import public_url
    from chainette.http import bearer, list_models

    headers = bearer(config.resolve_api_key(default_env=DEFAULT_KEY_ENV))
    served = list_models(config, headers)
    if served is not None and config.model not in served:
        warnings.warn(
            f"Engine '{config.name}': the server at {public_url(config.endpoint)} lists {', '.join(served) or 'no model'}, not '{config.model}'; "
            "requests may fail. Set model= to a name it serves.",
            stacklevel=2,
        )
    if profile_name(config) == "auto":
        from chainette_openai.probe import probe_once

        probe_once(config, headers)
    return None


@hookimpl
def check_output_model(config: EngineConfig[OpenAIOptions], model: type[BaseModel]) -> None:
    """With strict mode, refuse an output model strict mode cannot express (see `chainette_openai.strict`)."""
    profile = resolve(config)
    if profile.strict and profile.structured_output == "json_schema":
        from chainette_openai.strict import check_strict

        check_strict(config, model)


@hookimpl
def make_client(config: EngineConfig[OpenAIOptions]) -> OpenAIClient:
    from chainette_openai.client import OpenAIClient

    return OpenAIClient(config)


@hookimpl
def make_batch_client(config: EngineConfig[OpenAIOptions]) -> OpenAIBatchClient:
    from chainette_openai.batch import OpenAIBatchClient

    return OpenAIBatchClient(config)


@hookimpl
def translate_sampling(config: EngineConfig[OpenAIOptions], sampling: SamplingParams) -> dict[str, Any]:
    """The wire fields of the engine's API; the token limit under the profile's name on Chat Completions. The OpenAI
    API (no endpoint) takes at most 4 stop strings, so more is a ConfigError at start."""
    if api_of(config) == "responses":
        return map_sampling(sampling, RESPONSES_FIELDS, engine=config.name)
    if not config.endpoint and sampling.stop and len(sampling.stop) > MAX_STOP:
        raise ConfigError(
            f"Engine '{config.name}': the OpenAI API takes at most {MAX_STOP} stop strings; the step gives {len(sampling.stop)}. "
            "Keep the 4 that matter most."
        )
    return map_sampling(sampling, {**CHAT_FIELDS, "max_tokens": resolve(config).token_limit}, engine=config.name)


@hookimpl
def model_price(config: EngineConfig[OpenAIOptions]) -> tuple[float, float] | None:
    """The price of the engine's model on the OpenAI API (a dated snapshot such as gpt-4o-2024-08-06 counts as gpt-4o)."""
    if config.endpoint:
        return None
    model = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", config.model)
    price = PRICES.get(model)
    if price is None or not config.options.batch:
        return price
    return price[0] * BATCH_DISCOUNT, price[1] * BATCH_DISCOUNT
