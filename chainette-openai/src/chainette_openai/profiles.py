"""Server profiles: how a given OpenAI-compatible server wants the answer's schema and the token limit.

A profile is a preset (`PRESETS`, from each server's documentation and the servers tried here), or `auto`,
which `probe` resolves once per server at start. The engine options `structured_output`, `token_limit`
and `strict` override single parts of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from chainette.client import Request
    from chainette.engines import EngineConfig
    from chainette_openai.options import OpenAIOptions

StructuredOutput = Literal["json_schema", "json_object", "json_object_value", "prompt"]
TokenLimit = Literal["max_completion_tokens", "max_tokens"]
ProfileName = Literal["openai", "generic", "vllm", "sglang", "lm-studio", "ollama", "llama-cpp", "tgi", "auto"]


@dataclass(frozen=True)
class Profile:
    """`structured_output`: `json_schema` (`response_format.json_schema`), `json_object` (the schema under
    `response_format.schema`), `json_object_value` (under `response_format.value`), or `prompt` (no
    response_format: the schema is only in the prompt, and answers are validated). `token_limit`: the
    request field that caps the answer. `strict`: OpenAI's strict mode (json_schema only)."""

    structured_output: StructuredOutput
    token_limit: TokenLimit
    strict: bool = False


PRESETS: dict[str, Profile] = {
    "openai": Profile("json_schema", "max_completion_tokens", strict=True),
    "generic": Profile("json_schema", "max_tokens"),
    "vllm": Profile("json_schema", "max_completion_tokens"),
    "sglang": Profile("json_schema", "max_tokens"),
    "lm-studio": Profile("json_schema", "max_tokens"),
    "ollama": Profile("json_schema", "max_tokens"),
    "llama-cpp": Profile("json_object", "max_tokens"),
    "tgi": Profile("json_object_value", "max_tokens"),
}

# What `probe` found, per (endpoint, model): an engine with profile "auto" is probed once per process.
probed: dict[tuple[str, str], Profile] = {}


def profile_name(config: EngineConfig[OpenAIOptions]) -> str:
    """The engine's profile: as set, else `openai` on the OpenAI API and `generic` on a compatible server."""
    return config.options.profile or ("generic" if config.endpoint else "openai")


def resolve(config: EngineConfig[OpenAIOptions]) -> Profile:
    """The engine's profile with its options' overrides (an `auto` one not probed yet counts as `generic`)."""
    name = profile_name(config)
    found = probed.get((config.endpoint or "", config.model)) if name == "auto" else None
    profile = found or PRESETS["generic" if name == "auto" else name]
    options = config.options
    return replace(
        profile,
        structured_output=options.structured_output or profile.structured_output,
        token_limit=options.token_limit or profile.token_limit,
        strict=profile.strict if options.strict is None else options.strict,
    )


def response_format(profile: Profile, request: Request, strict_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chat-completions `response_format` for `request` under `profile` (None: none is sent). `strict_schema`
    is the request's schema in strict form, given when the profile is strict and the request has a model."""
    mode = profile.structured_output
    if mode == "json_object":
        return {"type": "json_object", "schema": request.schema}
    if mode == "json_object_value":
        return {"type": "json_object", "value": request.schema}
    if mode == "prompt":
        return None
    if strict_schema is not None:
        return {"type": "json_schema", "json_schema": {"name": request.schema_name, "schema": strict_schema, "strict": True}}
    return {"type": "json_schema", "json_schema": {"name": request.schema_name, "schema": request.schema}}
