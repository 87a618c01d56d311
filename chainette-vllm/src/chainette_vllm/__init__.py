"""Chainette backend `vllm` (alias `vllm_api`): a thin client for vLLM's OpenAI-compatible server, which
chainette starts, shares and stops itself when an engine has no `endpoint`.

This module holds the hooks; the options model and the `vllm serve` flags it maps are in `chainette_vllm.options`,
which every module of the backend imports, and `chainette_vllm.spec` says which server an engine needs. The HTTP client
(`chainette_vllm.client`), the servers in use (`chainette_vllm.server`, with `process`, `probe`, `warm` and the state
folder, `state`) and the CLI commands (`chainette_vllm.commands`) are imported only when used, so listing backends
imports no HTTP or CLI library.
"""

from __future__ import annotations

from pathlib import Path
import threading
from typing import TYPE_CHECKING, Any

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.hookspecs import hookimpl
from chainette.media import refuse_kinds
from chainette.sampling import SamplingParams, map_sampling
from chainette_vllm.options import VllmOptions
from chainette_vllm.spec import serve_spec

if TYPE_CHECKING:
    import typer

    from chainette_vllm.client import VllmClient
    from chainette_vllm.run_batch import RunBatchClient

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


@hookimpl
def backend_aliases() -> list[str]:
    return ["vllm_api"]


@hookimpl
def check_input_media(config: EngineConfig[VllmOptions], fields: dict[str, str]) -> None:
    """vLLM's chat API takes images (`image_url`) and audio (`audio_url`), not documents."""
    refuse_kinds(config.name, fields, {"document": "vLLM's chat API has no document part; give the pages as images (Image) instead."})


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
    return serve_spec(config).key


@hookimpl
def server_devices(config: EngineConfig[VllmOptions]) -> list[str] | None:
    """The GPUs of the server chainette starts: `gpu_ids` (a list or a "0,1" string), else every GPU; None with an endpoint."""
    if config.endpoint:
        return None
    gpu_ids = config.options.gpu_ids
    if gpu_ids is None:
        return ["cuda:*"]
    ids = gpu_ids.split(",") if isinstance(gpu_ids, str) else gpu_ids
    return [f"cuda:{str(gpu).strip()}" for gpu in ids]


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
