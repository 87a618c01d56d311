"""The `anthropic` backend: Anthropic's Messages API through the official SDK.

This module only declares hooks (the options model is `chainette_anthropic.options`); the SDK is imported when the
first client is made.
"""

from __future__ import annotations

from pathlib import Path
import re
from typing import TYPE_CHECKING, Any

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.media import refuse_kinds
from chainette.pricing import BATCH_DISCOUNT, Price
from chainette.sampling import SamplingParams, map_sampling
from chainette_anthropic.options import AnthropicOptions

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chainette_anthropic.batch import AnthropicBatchClient
    from chainette_anthropic.client import AnthropicClient

__version__ = "0.1.0"

# The sampling fields of the Messages API as the SDK 2.x types it (`MessageCreateParams`): it has no temperature, top_p
# or top_k (they warn; `SamplingParams.extra` still sends them, for a model that takes them).
SAMPLING_FIELDS = {"max_tokens": "max_tokens", "stop": "stop_sequences"}
PROVIDER_HOSTS = ("https://api.anthropic.com",)  # an endpoint= here is still Anthropic's own API, at its prices

# USD per million tokens of input, output, input read from the prompt cache and input written to it (the 5-minute
# cache), from Anthropic's pricing page and model pages (https://platform.claude.com/docs/en/about-claude/pricing) as of
# 2026-12. Haiku 5.5 is at its rate for prompts of up to 100K tokens, and Sonnet 4 and 4.5 prompts over 200K tokens cost
# more, which this table does not know. Engines override them with their price_per_million_* options; unknown models get
# no cost estimate. Message Batches halve every kind.
PRICES = {
    "claude-fable-5-2": Price(8.00, 40.00, cache_read=0.20, cache_write=10.00),
    "claude-mythos-5-2": Price(8.00, 40.00, cache_read=0.20, cache_write=10.00),
    "claude-fable-5-1": Price(10.00, 50.00, cache_read=0.25, cache_write=12.50),
    "claude-mythos-5-1": Price(10.00, 50.00, cache_read=0.25, cache_write=12.50),
    "claude-fable-5": Price(10.00, 50.00, cache_read=1.00, cache_write=12.50),
    "claude-mythos-5": Price(10.00, 50.00, cache_read=1.00, cache_write=12.50),
    "claude-opus-5-5": Price(4.00, 20.00, cache_read=0.20, cache_write=5.00),
    "claude-opus-5": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-8": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-7": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
    "claude-sonnet-5-5": Price(2.00, 10.00, cache_read=0.10, cache_write=2.50),
    "claude-sonnet-5": Price(2.00, 10.00, cache_read=0.20, cache_write=2.50),
    "claude-haiku-5-5": Price(0.10, 0.50, cache_read=0.01, cache_write=0.125),
    "claude-opus-4-6": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
    "claude-sonnet-4-6": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75),
    "claude-opus-4-5": Price(5.00, 25.00, cache_read=0.50, cache_write=6.25),
    "claude-sonnet-4-5": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75),
    "claude-haiku-4-5": Price(1.00, 5.00, cache_read=0.10, cache_write=1.25),
    "claude-opus-4-1": Price(15.00, 75.00, cache_read=1.50, cache_write=18.75),
    "claude-opus-4": Price(15.00, 75.00, cache_read=1.50, cache_write=18.75),
    "claude-sonnet-4": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75),
    "claude-3-7-sonnet": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75),
    "claude-3-5-haiku": Price(0.80, 4.00, cache_read=0.08, cache_write=1.00),
    "claude-3-haiku": Price(0.25, 1.25, cache_read=0.03, cache_write=0.30),
}
SNAPSHOT = re.compile(r"-(\d{8}|latest)$")  # claude-sonnet-4-5-20250929, claude-3-7-sonnet-latest: their family's price


@hookimpl
def engine_options() -> type[EngineOptions]:
    return AnthropicOptions


@hookimpl
def check_output_model(config: EngineConfig[AnthropicOptions], model: type[BaseModel]) -> None:
    """With JSON outputs, refuse an output model they cannot express (see `chainette_anthropic.schema`)."""
    if config.options.structured_output == "json_schema":
        from chainette_anthropic.schema import check_json_outputs

        check_json_outputs(config, model)


@hookimpl
def check_input_media(config: EngineConfig[AnthropicOptions], fields: dict[str, str]) -> None:
    """The Messages API takes images (PNG, JPEG, GIF, WebP) and PDFs, not audio."""
    refuse_kinds(
        config.name, fields, {"audio": "the Messages API takes no audio input; transcribe it first, or use a backend that takes audio."}
    )


@hookimpl
def make_client(config: EngineConfig[AnthropicOptions]) -> AnthropicClient:
    from chainette_anthropic.client import AnthropicClient

    return AnthropicClient(config)


@hookimpl
def make_batch_client(config: EngineConfig[AnthropicOptions], run_dir: Path | None) -> AnthropicBatchClient:
    from chainette_anthropic.batch import AnthropicBatchClient

    return AnthropicBatchClient(config, run_dir)


@hookimpl
def translate_sampling(config: EngineConfig[AnthropicOptions], sampling: SamplingParams) -> dict[str, Any]:
    """The Messages API's fields (stop strings as stop_sequences). Extended thinking needs a token limit above its
    budget: a ConfigError at start otherwise."""
    budget = config.options.thinking_budget
    limit = sampling.max_tokens or config.options.max_tokens
    if budget is not None and limit <= budget:
        raise ConfigError(
            f"Engine '{config.name}': the token limit ({limit}) must be above thinking_budget ({budget}), which it includes. "
            "Raise max_tokens (the step's sampling or the engine's option), or lower thinking_budget."
        )
    return map_sampling(sampling, SAMPLING_FIELDS, engine=config.name)


@hookimpl
def model_price(config: EngineConfig[AnthropicOptions]) -> Price | None:
    """The price of the engine's model on Anthropic's API (a dated snapshot counts as its family), halved in batches."""
    if config.endpoint and not config.endpoint.startswith(PROVIDER_HOSTS):
        return None
    price = PRICES.get(SNAPSHOT.sub("", config.model))
    if price is None or not config.options.batch:
        return price
    return price.scaled(BATCH_DISCOUNT)
