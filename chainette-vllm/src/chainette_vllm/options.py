"""The vllm backend's engine options (`VllmOptions`) and the `vllm serve` flags and environment they map to or refuse."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from chainette.engines import EngineOptions

API_KEY_ENV = "VLLM_API_KEY"
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
