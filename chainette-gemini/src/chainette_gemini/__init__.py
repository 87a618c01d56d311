"""The `gemini` backend: the Gemini Developer API through the official google-genai SDK.

This module only declares hooks (the options model is `chainette_gemini.options`); the SDK is imported when the first
client is made.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from chainette.engines import EngineConfig, EngineOptions
from chainette.hookspecs import hookimpl
from chainette.pricing import BATCH_DISCOUNT, Price
from chainette.sampling import SamplingParams, map_sampling
from chainette_gemini.options import GeminiOptions

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chainette_gemini.batch import GeminiBatchClient
    from chainette_gemini.client import GeminiClient

__version__ = "0.1.0"

# SamplingParams field -> GenerateContentConfig field. min_p and repetition_penalty have none: they warn.
SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_output_tokens",
    "stop": "stop_sequences",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "n": "candidate_count",
}
GEMINI_API_HOST = "generativelanguage.googleapis.com"

# USD per million tokens of input, output and input read from the implicit prompt cache, on the Gemini Developer API's
# paid standard tier for prompts of at most 200k tokens (Gemini 2.5 Pro costs more above), from Google's price list
# (https://ai.google.dev/gemini-api/docs/pricing, as of 2026-10). Text, image and video input (audio input costs more
# on Flash). Engines override them with their price_per_million_* options; unknown models get no cost estimate. Batch
# mode halves every kind.
PRICES = {
    "gemini-2.5-pro": Price(1.25, 10.00, cache_read=0.125),
    "gemini-2.5-flash": Price(0.30, 2.50, cache_read=0.03),
    "gemini-2.5-flash-lite": Price(0.10, 0.40, cache_read=0.01),
}


@hookimpl
def engine_options() -> type[EngineOptions]:
    return GeminiOptions


@hookimpl
def check_output_model(config: EngineConfig[GeminiOptions], model: type[BaseModel]) -> None:
    """Refuse an output model Gemini's JSON-schema output cannot express (see `chainette_gemini.schema`)."""
    from chainette.schema import json_schema
    from chainette_gemini.schema import check_schema

    check_schema(config, model.__name__, json_schema(model))


@hookimpl
def check_input_media(config: EngineConfig[GeminiOptions], fields: dict[str, str]) -> None:
    """Gemini takes images, PDFs and audio: nothing is refused."""


@hookimpl
def make_client(config: EngineConfig[GeminiOptions]) -> GeminiClient:
    from chainette_gemini.batch import GeminiBatchClient
    from chainette_gemini.client import GeminiClient

    return GeminiClient(config)


@hookimpl
def make_batch_client(config: EngineConfig[GeminiOptions]) -> GeminiBatchClient:
    from chainette_gemini.batch import GeminiBatchClient

    return GeminiBatchClient(config)


@hookimpl
def translate_sampling(config: EngineConfig[GeminiOptions], sampling: SamplingParams) -> dict[str, Any]:
    """The GenerateContentConfig fields of `sampling` (`n` as candidate_count); `extra` keys the config lacks are
    added to the request body as they are."""
    return map_sampling(sampling, SAMPLING_FIELDS, engine=config.name)


@hookimpl
def model_price(config: EngineConfig[GeminiOptions]) -> Price | None:
    """The price of the engine's model on the Gemini API (`models/` and a `-latest` or `-001` suffix ignored); None
    for an endpoint that is not Google's."""
    if config.endpoint and GEMINI_API_HOST not in config.endpoint:
        return None
    model = re.sub(r"-(latest|\d{3})$", "", config.model.removeprefix("models/"))
    price = PRICES.get(model)
    if price is None or not config.options.batch:
        return price
    return price.scaled(BATCH_DISCOUNT)
