"""The built-in `fake` backend: offline and deterministic, answers synthesised from the output schema.

It is what the quick start and the tests run on. Options: `latency` (seconds per request).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any

from pydantic import Field

from chainette.client import Answer, Request, Usage
from chainette.engines import EngineConfig, EngineOptions
from chainette.hookspecs import hookimpl
from chainette.sampling import SamplingParams

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


class FakeOptions(EngineOptions):
    """Options of the fake backend."""

    max_concurrency: int = Field(64, ge=1)
    latency: float = Field(0.0, ge=0, description="Seconds each request takes.")


class FakeClient:
    """Answers every request with JSON that follows the request's schema, seeded by its messages."""

    def __init__(self, config: EngineConfig):
        self.latency = config.options.latency
        self.model = config.model

    async def complete(self, request: Request) -> Answer:
        if self.latency:
            await asyncio.sleep(self.latency)
        text = json.dumps(synthesize(request.schema, seed_text=self.model + repr(request.messages)))
        prompt_chars = sum(len(m["content"]) for m in request.messages)
        return Answer(text=text, usage=Usage(input_tokens=prompt_chars // 4 + 1, output_tokens=len(text) // 4 + 1))

    async def aclose(self) -> None:
        return None


def synthesize(schema: dict[str, Any], *, seed_text: str) -> Any:
    """A value that validates against `schema`, the same for the same `seed_text`."""
    seed = int.from_bytes(hashlib.blake2b(seed_text.encode(), digest_size=8).digest(), "big")
    return _value(schema, schema.get("$defs", {}), random.Random(seed), "value")


def _value(node: dict[str, Any], defs: dict[str, Any], rng: random.Random, name: str) -> Any:
    if "$ref" in node:
        return _value(defs[node["$ref"].rsplit("/", 1)[-1]], defs, rng, name)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return rng.choice(node["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"] or node[key]
            return _value(options[0], defs, rng, name)
    kind = node.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = node.get("properties", {})
        return {key: _value(sub, defs, rng, key) for key, sub in props.items()}
    if kind == "array":
        count = max(node.get("minItems", 1), min(2, node.get("maxItems", 2)))
        return [_value(node.get("items", {}), defs, rng, name) for _ in range(count)]
    if kind == "integer":
        return rng.randint(int(node.get("minimum", 0)), int(node.get("maximum", 100)))
    if kind == "number":
        return round(rng.uniform(node.get("minimum", 0.0), node.get("maximum", 1.0)), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(node, rng, name)


def _string(node: dict[str, Any], rng: random.Random, name: str) -> str:
    text = f"{name} {rng.choice(WORDS)} {rng.choice(WORDS)}"
    text = text.ljust(node.get("minLength", 0), "x")
    return text[: node["maxLength"]] if "maxLength" in node else text


@hookimpl
def engine_options() -> type[EngineOptions]:
    return FakeOptions


@hookimpl
def make_client(config: EngineConfig) -> FakeClient:
    return FakeClient(config)


@hookimpl
def translate_sampling(sampling: SamplingParams) -> dict[str, Any]:
    return sampling.model_dump(exclude_none=True)
