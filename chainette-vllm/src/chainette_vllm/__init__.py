"""Chainette backend `vllm` (alias `vllm_api`): a thin client for vLLM's OpenAI-compatible server, which
chainette starts, shares and stops itself when an engine has no `endpoint`.

This module holds the options model and the hooks. The HTTP client (`chainette_vllm.client`), the
servers in use (`chainette_vllm.server`, with `spec`, `process`, `probe` and `warm`) and the CLI
commands (`chainette_vllm.commands`) are imported only when used, so listing backends imports no
HTTP or CLI library.
"""

from __future__ import annotations

from pathlib import Path
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.sampling import SamplingParams, map_sampling

if TYPE_CHECKING:
    import typer

    from chainette_vllm.client import VllmClient
    from chainette_vllm.run_batch import RunBatchClient

API_KEY_ENV = "VLLM_API_KEY"
SAMPLING_FIELDS = {
    "max_tokens": "max_completion_tokens",  # vLLM 0.33 deprecates max_tokens
    **{
        name: name
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "n",
        )
    },
}
# Options passed to `vllm serve` as flags, in this order.
SERVE_FLAGS = {
    "dtype": "--dtype",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "tensor_parallel_size": "--tensor-parallel-size",
    "pipeline_parallel_size": "--pipeline-parallel-size",
    "data_parallel_size": "--data-parallel-size",
    "reasoning_parser": "--reasoning-parser",
    "served_model_name": "--served-model-name",
}
# Flags chainette sets itself or maps from an option: refused in extra_serve_flags, with what to do instead.
RESERVED_FLAGS = {
    **{flag: f"use the option {option}=" for option, flag in SERVE_FLAGS.items()},
    "-tp": "use the option tensor_parallel_size=",
    "-pp": "use the option pipeline_parallel_size=",
    "-dp": "use the option data_parallel_size=",
    "--host": "chainette binds the server to 127.0.0.1 (run vLLM yourself to serve other hosts)",
    "--port": "use the option port=",
    "--model": "the engine's model= is the model served",
    "--api-key": "use the engine's api_key= or api_key_env= (given to the server as VLLM_API_KEY, never on its command line)",
    "--enable-reasoning": "vLLM removed it; use enable_reasoning=True or reasoning_parser=",
}
RESERVED_ENV = {
    "VLLM_API_KEY": "use the engine's api_key= or api_key_env=",
    "CUDA_VISIBLE_DEVICES": "use the option gpu_ids=",
}
# Options that only concern a server chainette starts (ignored, with a warning, when the engine has an endpoint).
SERVE_OPTIONS = {
    *(set(SERVE_FLAGS) - {"served_model_name"}),
    "port",
    "startup_timeout",
    "enable_reasoning",
    "gpu_ids",
    "extra_serve_flags",
    "extra_env",
}


class VllmOptions(EngineOptions):
    """Options of the vllm backend: the client's, then those of the `vllm serve` process chainette starts."""

    key_env: ClassVar[str | None] = API_KEY_ENV
    cache_neutral: ClassVar[frozenset[str]] = EngineOptions.cache_neutral | {
        "port",
        "startup_timeout",
        "gpu_memory_utilization",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "served_model_name",
        "gpu_ids",
        "extra_env",
    }

    max_concurrency: int = Field(256, ge=1, description="Requests in flight at once; vLLM batches them, so keep it high.")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description='Sent as is, e.g. {"enable_thinking": False}.')
    include_reasoning: bool | None = Field(None, description="Ask the server to return (True) or drop (False) reasoning text.")

    port: int | None = Field(None, ge=1, le=65535, description="Port of the started server (default: a free one).")
    startup_timeout: float = Field(600.0, gt=0, description="Seconds to wait for the started server's GET /health.")
    dtype: str | None = Field(None, description="--dtype (auto, bfloat16, float16, ...).")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="--gpu-memory-utilization.")
    max_model_len: int | None = Field(None, ge=1, description="--max-model-len.")
    tensor_parallel_size: int | None = Field(None, ge=1, description="--tensor-parallel-size.")
    pipeline_parallel_size: int | None = Field(None, ge=1, description="--pipeline-parallel-size.")
    data_parallel_size: int | None = Field(None, ge=1, description="--data-parallel-size.")
    reasoning_parser: str | None = Field(None, min_length=1, description="--reasoning-parser (qwen3, deepseek_r1, granite, ...).")
    served_model_name: str | None = Field(None, min_length=1, description="--served-model-name; also the model name requests send.")
    enable_reasoning: bool = Field(False, description="Start the server with the reasoning parser that fits the model.")
    gpu_ids: list[int] | str | None = Field(None, description="GPUs the server may use, as CUDA_VISIBLE_DEVICES.")
    extra_serve_flags: list[str] = Field(default_factory=list, description="Appended verbatim to `vllm serve`.")
    extra_env: dict[str, SecretStr] = Field(
        default_factory=dict, description="Added to the server's environment; values are secrets (e.g. HF_TOKEN), never shown."
    )

    @field_validator("gpu_ids")
    @classmethod
    def _check_gpu_ids(cls, value: list[int] | str | None) -> list[int] | str | None:
        if value is not None and (not value or (isinstance(value, list) and min(value) < 0)):
            raise PydanticCustomError("gpu_ids", "give GPU indices (e.g. [0, 1]) or a CUDA_VISIBLE_DEVICES string (e.g. '0,1')")
        return value

    @field_validator("extra_serve_flags")
    @classmethod
    def _check_flags(cls, flags: list[str]) -> list[str]:
        for token in flags:
            name = token.split("=", 1)[0]
            name = name[:2] + name[2:].replace("_", "-") if name.startswith("--") else name
            if name in RESERVED_FLAGS:
                raise PydanticCustomError(
                    "reserved_flag",
                    "{flag} cannot be given here: {advice}",
                    {"flag": name, "advice": RESERVED_FLAGS[name]},
                )
        return flags

    @field_validator("extra_env")
    @classmethod
    def _check_env(cls, env: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in env:
            if name in RESERVED_ENV:
                raise PydanticCustomError(
                    "reserved_env", "{name} cannot be set here: {advice}", {"name": name, "advice": RESERVED_ENV[name]}
                )
        return env


@hookimpl
def backend_aliases() -> list[str]:
    return ["vllm_api"]


@hookimpl
def engine_options() -> type[EngineOptions]:
    return VllmOptions


@hookimpl
def ensure_running(config: EngineConfig[VllmOptions], run_dir: Path | None, cancelled: threading.Event) -> str:
    """Check the engine's endpoint, or start (or reuse) a `vllm serve` for it; return the base URL."""
    from chainette_vllm import server

    return server.ensure_running(config, run_dir, cancelled)


@hookimpl
def server_key(config: EngineConfig[VllmOptions]) -> str | None:
    """Engines without an endpoint and with the same model and serve options share one server."""
    if config.endpoint:
        return None
    from chainette_vllm.spec import serve_spec

    return serve_spec(config).key


@hookimpl
def stop_engine(config: EngineConfig[VllmOptions]) -> str | None:
    """Release the engine's server; returns a note when the server keeps running (warm, or shared with other engines)."""
    if config.endpoint:
        return None
    from chainette_vllm import server

    return server.release(config)


@hookimpl
def make_client(config: EngineConfig[VllmOptions]) -> VllmClient:
    """The client for the server at `config.endpoint`; for a server chainette started, it stops the run once that server exits."""
    from chainette_vllm import server
    from chainette_vllm.client import VllmClient

    return VllmClient(config, check_server=server.exit_check(config))


@hookimpl
def make_batch_client(config: EngineConfig[VllmOptions], run_dir: Path | None) -> RunBatchClient:
    """Batch jobs as `vllm run-batch` processes, for an engine without an endpoint (a server has no batch endpoint)."""
    if config.endpoint:
        raise ConfigError(
            f"Engine '{config.name}': batch=True runs `vllm run-batch` on this machine, so the engine must not have an endpoint; "
            "remove endpoint=, or drop batch=True to use the server online."
        )
    from chainette_vllm.run_batch import RunBatchClient

    return RunBatchClient(config, run_dir)


@hookimpl
def translate_sampling(config: EngineConfig[VllmOptions], sampling: SamplingParams) -> dict[str, Any]:
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


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from chainette_vllm.commands import add_commands

    add_commands(app)
