"""Chainette backend `vllm` (alias `vllm_api`): a thin client for a running `vllm serve` OpenAI-compatible server.

This module holds the options model and the hooks; the HTTP client lives in `chainette_vllm.client`
and is imported only when an engine starts, so listing backends imports no HTTP library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.sampling import SamplingParams, map_sampling

if TYPE_CHECKING:
    from chainette_vllm.client import VllmClient

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"
API_KEY_ENV = "VLLM_API_KEY"
SAMPLING_FIELDS = {
    name: name
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
    )
}


class VllmOptions(EngineOptions):
    """Options of the vllm backend (on top of max_concurrency, timeout, max_retries)."""

    max_concurrency: int = Field(256, ge=1, description="Requests in flight at once; vLLM batches them, so keep it high.")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description='Sent as is, e.g. {"enable_thinking": False}.')
    include_reasoning: bool | None = Field(None, description="Ask the server to return (True) or drop (False) reasoning text.")


@hookimpl
def engine_options() -> type[EngineOptions]:
    return VllmOptions


@hookimpl
def ensure_running(config: EngineConfig) -> str:
    return config.endpoint or DEFAULT_ENDPOINT


@hookimpl
def make_client(config: EngineConfig) -> VllmClient:
    from chainette_vllm.client import VllmClient

    return VllmClient(config)


@hookimpl
def translate_sampling(config: EngineConfig, sampling: SamplingParams) -> dict[str, Any]:
    """Every SamplingParams field is a top-level vLLM field of the same name; `extra` passes through.

    `guided_*` keys are refused: vLLM >= 0.12 ignores them silently and the answer would be unconstrained.
    """
    wire = map_sampling(sampling, SAMPLING_FIELDS, engine=config.name)
    guided = sorted(key for key in wire if key.startswith("guided_"))
    if guided:
        raise ConfigError(
            f"Engine '{config.name}': remove {', '.join(guided)} from the sampling extra: vLLM >= 0.12 ignores guided_* fields "
            "and would answer unconstrained. The output model's schema is already enforced through response_format."
        )
    return wire
