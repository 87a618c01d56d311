"""Which `vllm serve` an engine without an endpoint needs: its model, flags, environment and key, as a ServeSpec.

`serve_spec` maps a vllm engine's options to a ServeSpec; engines with equal specs need the same
server, and `ServeSpec.key` names it (the `server_key` hook, the registry of servers in use, the
warm-server state file). The API key reaches the server as the VLLM_API_KEY environment variable,
never on its command line, so `ServeSpec.shown` (the command errors, logs and `chainette ps` show)
holds no secret; `extra_env` values are secrets too and are listed in `ServeSpec.secrets` for
redaction. Pure computation: no process, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
import os
from pathlib import Path
import shlex

from chainette.engines import EngineConfig
from chainette.errors import ConfigError
from chainette.secrets import engine_secrets
from chainette_vllm.options import API_KEY_ENV, SERVE_FLAGS, VllmOptions

HOST = "127.0.0.1"
# Substring of the lower-cased model name -> the reasoning parser enable_reasoning=True picks.
REASONING_PARSERS = (("deepseek-r1", "deepseek_r1"), ("deepseek_r1", "deepseek_r1"), ("qwen3", "qwen3"), ("granite", "granite"))


@dataclass(frozen=True)
class ServeSpec:
    """Everything that decides which server an engine needs: engines with equal specs share one."""

    engine: str
    model: str
    flags: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    api_key: str | None = field(repr=False)
    port: int | None
    startup_timeout: float
    secrets: frozenset[str] = field(repr=False)  # redacted from the log lines errors quote
    extra_flags: tuple[str, ...] = ()  # the engine's extra_serve_flags (the end of `flags`), checked against vLLM's aliases

    @property
    def key(self) -> str:
        """A stable name for the server: a hash of the model and of every option that changes the server."""
        identity = {"model": self.model, "flags": self.flags, "env": self.env, "port": self.port, "api_key": self.api_key}
        return "vllm-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def command(self, executable: str, port: int) -> list[str]:
        return [executable, "serve", self.model, "--host", HOST, "--port", str(port), *self.flags]

    def batch_command(self, executable: str, batch_file: Path, output: Path) -> list[str]:
        """`vllm run-batch` over `batch_file` into `output`, with the model and flags `vllm serve` would get."""
        return [executable, "run-batch", "-i", str(batch_file), "-o", str(output), "--model", self.model, *self.flags]

    def shown(self, command: list[str]) -> str:
        """The command as a shell line, with CUDA_VISIBLE_DEVICES when set (never the key or extra_env values)."""
        devices = self.env.get("CUDA_VISIBLE_DEVICES")
        prefix = f"CUDA_VISIBLE_DEVICES={shlex.quote(devices)} " if devices is not None else ""
        return prefix + shlex.join(command)

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, without a VLLM_API_KEY unless the engine has a key, plus `env`."""
        env = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        env.update(self.env)
        return env


def serve_spec(config: EngineConfig[VllmOptions]) -> ServeSpec:
    """The server an engine without an endpoint needs; ConfigError when enable_reasoning cannot pick a parser."""
    options = config.options
    values = {option: getattr(options, option) for option in SERVE_FLAGS}
    values["reasoning_parser"] = reasoning_parser(config)
    flags = [part for option, flag in SERVE_FLAGS.items() if values[option] is not None for part in (flag, str(values[option]))]
    env = {}
    if options.gpu_ids is not None:
        gpu_ids = options.gpu_ids
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids if isinstance(gpu_ids, str) else ",".join(map(str, gpu_ids))
    env.update({name: value.get_secret_value() for name, value in options.extra_env.items()})
    return ServeSpec(
        engine=config.name,
        model=config.model,
        flags=(*flags, *options.extra_serve_flags),
        env=env,
        api_key=config.resolve_api_key(default_env=API_KEY_ENV),
        port=options.port,
        startup_timeout=options.startup_timeout,
        secrets=engine_secrets(config, default_env=API_KEY_ENV),
        extra_flags=tuple(options.extra_serve_flags),
    )


def reasoning_parser(config: EngineConfig[VllmOptions]) -> str | None:
    """`reasoning_parser`, else (with enable_reasoning=True) the parser that fits the model's name."""
    options = config.options
    if options.reasoning_parser or not options.enable_reasoning:
        return options.reasoning_parser
    name = config.model.lower()
    for pattern, parser in REASONING_PARSERS:
        if pattern in name:
            return parser
    raise ConfigError(
        f"Engine '{config.name}': enable_reasoning=True, but chainette does not know which reasoning parser fits "
        f"'{config.model}'. Set reasoning_parser= to the parser vLLM documents for this model (e.g. qwen3, deepseek_r1, granite)."
    )
