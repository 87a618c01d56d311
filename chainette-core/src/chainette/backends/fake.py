"""The built-in `fake` backend: offline and deterministic, answers synthesised from the output schema.

It is what the quick start and the tests run on. Options: `latency` (seconds per request). Its answers cost nothing
and come out the same each time, so its engines leave the response cache alone unless registered with `cache=True`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
import zlib

import orjson
from pydantic import Field

from chainette.client import Answer, Request, Usage, content_text
from chainette.engines import EngineConfig, EngineOptions
from chainette.hookspecs import hookimpl
from chainette.sampling import SamplingParams

LCG_MULTIPLIER, LCG_INCREMENT, LCG_MASK = 6364136223846793005, 1442695040888963407, (1 << 64) - 1
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


class FakeOptions(EngineOptions):
    """Options of the fake backend."""

    max_concurrency: int = Field(64, ge=1)
    cache: bool = Field(False, description="Answer from the response cache and store answers there (off: fake answers are free).")
    latency: float = Field(0.0, ge=0, description="Seconds each request takes (0: answered at once, without a pass of the event loop).")


class FakeClient:
    """Answers every request with JSON that follows the request's schema, seeded by its messages."""

    def __init__(self, config: EngineConfig[FakeOptions]):
        self.latency = config.options.latency
        self.model = config.model
        self._model_seed = zlib.crc32(config.model.encode())
        self._makers: dict[int, tuple[dict[str, Any], Maker]] = {}

    async def complete(self, request: Request) -> Answer:
        if self.latency:
            await asyncio.sleep(self.latency)
        cached = self._makers.get(id(request.schema))
        if cached is None or cached[0] is not request.schema:
            cached = self._makers[id(request.schema)] = (request.schema, compile_schema(request.schema))
        seed, length = self._model_seed, 0
        for message in request.messages:  # the checksum of the model's name followed by the prompt, message by message
            content = content_text(message["content"])
            seed, length = zlib.crc32(content.encode(), seed), length + len(content)
        text = orjson.dumps(cached[1](Draws(seed))).decode()
        return Answer(text, None, Usage(length // 4 + 1, len(text) // 4 + 1))

    async def aclose(self) -> None:
        return None


class Draws:
    """A tiny deterministic number stream (a linear congruential generator), cheap to seed."""

    __slots__ = ("state",)

    def __init__(self, seed: int):
        self.state = seed or 1

    def below(self, count: int) -> int:
        """The next number of the stream, below `count`."""
        self.state = state = (self.state * LCG_MULTIPLIER + LCG_INCREMENT) & LCG_MASK
        return (state >> 33) % count


Maker = Callable[[Draws], Any]


def synthesize(schema: dict[str, Any], *, seed_text: str) -> Any:
    """A value that validates against `schema`, the same for the same `seed_text`."""
    return compile_schema(schema)(Draws(zlib.crc32(seed_text.encode())))


def compile_schema(schema: dict[str, Any]) -> Maker:
    """A function that draws one value valid for `schema` (compiled once per schema)."""
    return _maker(schema, schema.get("$defs", {}), "value")


def _maker(node: dict[str, Any], defs: dict[str, Any], name: str) -> Maker:
    if "$ref" in node:
        return _maker(defs[node["$ref"].rsplit("/", 1)[-1]], defs, name)
    if "const" in node:
        const = node["const"]
        return lambda draws: const
    if "enum" in node:
        choices = node["enum"]
        return lambda draws: choices[draws.below(len(choices))]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"] or node[key]
            return _maker(options[0], defs, name)
    kind = node.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        fields = [(key, _maker(sub, defs, key)) for key, sub in node.get("properties", {}).items()]
        return lambda draws: {key: make(draws) for key, make in fields}
    if kind == "array":
        item = _maker(node.get("items", {}), defs, name)
        count = max(node.get("minItems", 1), min(2, node.get("maxItems", 2)))
        return lambda draws: [item(draws) for _ in range(count)]
    if kind == "integer":
        low, high = int(node.get("minimum", 0)), int(node.get("maximum", 100))
        return lambda draws: low + draws.below(high - low + 1)
    if kind == "number":
        low, high = node.get("minimum", 0.0), node.get("maximum", 1.0)
        numbers = [round(low + (high - low) * step / 1000, 3) for step in range(1001)]
        return lambda draws: numbers[draws.below(1001)]
    if kind == "boolean":
        return lambda draws: draws.below(2) == 1
    if kind == "null":
        return lambda draws: None
    return _string_maker(node, name)


def _string_maker(node: dict[str, Any], name: str) -> Maker:
    min_length, max_length = node.get("minLength", 0), node.get("maxLength")

    phrases = [f"{name} {first} {second}" for first in WORDS for second in WORDS]

    def make(draws: Draws) -> str:
        return phrases[draws.below(10) * 10 + draws.below(10)]  # the name, then a word per draw

    if not min_length and max_length is None:
        return make
    return lambda draws: make(draws).ljust(min_length, "x")[:max_length]


@hookimpl
def engine_options() -> type[EngineOptions]:
    return FakeOptions


@hookimpl
def check_input_media(config: EngineConfig[FakeOptions], fields: dict[str, str]) -> None:
    """The fake backend takes every kind of media: it answers from the prompt's text and each part's reference."""


@hookimpl
def make_client(config: EngineConfig[FakeOptions]) -> FakeClient:
    return FakeClient(config)


@hookimpl
def translate_sampling(sampling: SamplingParams) -> dict[str, Any]:
    """Every field set, under its own name, with `extra` merged last (the fake backend ignores them all)."""
    return {**sampling.model_dump(exclude={"extra"}, exclude_none=True), **sampling.extra}
