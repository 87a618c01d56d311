"""The `openai` backend: the OpenAI API, or any OpenAI-compatible server, through the official SDK.

This module only declares hooks (the options model is `chainette_openai.options`); the SDK is imported when the first
client is made.
"""

from __future__ import annotations

from pathlib import Path
import re
import threading
from typing import TYPE_CHECKING, Any
import warnings

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.media import refuse_kinds
from chainette.pricing import BATCH_DISCOUNT, Price
from chainette.sampling import SamplingParams, map_sampling
from chainette.secrets import public_url
from chainette_openai.options import DEFAULT_KEY_ENV, OpenAIOptions, api_of
from chainette_openai.profiles import profile_name, resolve

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chainette_openai.batch import OpenAIBatchClient
    from chainette_openai.client import OpenAIClient

__version__ = "0.1.0"

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

# USD per million tokens of input, output and cached input (read from the automatic prompt cache, which costs nothing
# to write), from OpenAI's price list (standard tier, as of 2025-08). Engines override them with their
# price_per_million_* options; unknown models get no cost estimate. The Batch API halves every kind.
PRICES = {
    "gpt-5": Price(1.25, 10.00, cache_read=0.125),
    "gpt-5-mini": Price(0.25, 2.00, cache_read=0.025),
    "gpt-5-nano": Price(0.05, 0.40, cache_read=0.005),
    "gpt-4.1": Price(2.00, 8.00, cache_read=0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, cache_read=0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, cache_read=0.025),
    "gpt-4o": Price(2.50, 10.00, cache_read=1.25),
    "gpt-4o-mini": Price(0.15, 0.60, cache_read=0.075),
    "o3": Price(2.00, 8.00, cache_read=0.50),
    "o3-mini": Price(1.10, 4.40, cache_read=0.55),
    "o4-mini": Price(1.10, 4.40, cache_read=0.275),
}


@hookimpl
def engine_options() -> type[EngineOptions]:
    return OpenAIOptions


@hookimpl
def ensure_running(config: EngineConfig[OpenAIOptions], run_dir: Path | None, cancelled: threading.Event) -> str | None:
    """For an OpenAI-compatible server (an engine with endpoint=), check at once that it answers and takes the key;
    warn when its model list lacks the engine's model; with profile auto, probe it. The OpenAI API itself is not probed."""
    if not config.endpoint:
        return None
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
def check_input_media(config: EngineConfig[OpenAIOptions], fields: dict[str, str]) -> None:
    """The Responses API has no audio input part; Chat Completions takes images, audio (WAV, MP3) and PDFs."""
    if api_of(config) == "responses":
        refuse_kinds(config.name, fields, {"audio": "the Responses API has no audio input; use api: chat (input_audio parts)."})


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
def model_price(config: EngineConfig[OpenAIOptions]) -> Price | None:
    """The price of the engine's model on the OpenAI API (a dated snapshot such as gpt-4o-2024-08-06 counts as gpt-4o)."""
    if config.endpoint:
        return None
    model = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", config.model)
    price = PRICES.get(model)
    if price is None or not config.options.batch:
        return price
    return price.scaled(BATCH_DISCOUNT)
