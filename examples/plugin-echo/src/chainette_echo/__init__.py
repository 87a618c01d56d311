"""Chainette backend `echo`: answers every request by echoing the user's prompt into the output schema.

String fields get the last user message, numbers their minimum (or 0), booleans false, arrays
one item, enums their first value. It needs no server: a template for the plugin contract.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from chainette import Answer, EngineConfig, EngineOptions, Request, SamplingParams, Usage, hookimpl
from chainette.sampling import map_sampling


class EchoOptions(EngineOptions):
    """Options of the echo backend, besides those every backend takes (max_concurrency, timeout, ...)."""

    prefix: str = Field("", description="Text put before the prompt in every string field.")


class EchoClient:
    """Answers each request from its own messages; there is nothing to connect to or release."""

    def __init__(self, config: EngineConfig):
        self.prefix = config.options.prefix

    async def complete(self, request: Request) -> Answer:
        prompt = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        text = json.dumps(fill(request.schema, request.schema.get("$defs", {}), self.prefix + prompt))
        return Answer(text=text, usage=Usage(input_tokens=len(prompt.split()), output_tokens=len(text.split())))

    async def aclose(self) -> None:
        return None


def fill(node: dict[str, Any], defs: dict[str, Any], prompt: str) -> Any:
    """A value valid for the JSON schema `node`, with `prompt` in its string fields."""
    if "$ref" in node:
        return fill(defs[node["$ref"].rsplit("/", 1)[-1]], defs, prompt)
    if "const" in node or "enum" in node:
        return node["const"] if "const" in node else node["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            return fill(node[key][0], defs, prompt)
    kind = node.get("type", "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: fill(sub, defs, prompt) for name, sub in node.get("properties", {}).items()}
    if kind == "array":
        return [fill(node.get("items", {}), defs, prompt) for _ in range(max(node.get("minItems", 1), 1))]
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind in ("boolean", "null"):
        return False if kind == "boolean" else None
    return prompt.ljust(node.get("minLength", 0), ".")[: node.get("maxLength")]


@hookimpl
def engine_options() -> type[EngineOptions]:
    return EchoOptions


@hookimpl
def make_client(config: EngineConfig) -> EchoClient:
    return EchoClient(config)


@hookimpl
def translate_sampling(config: EngineConfig, sampling: SamplingParams) -> dict[str, Any]:
    """Echo honours no sampling field: map_sampling warns once per engine for each one set, and passes `extra` on."""
    return map_sampling(sampling, {}, engine=config.name)
