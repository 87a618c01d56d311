"""Gemini structured output: a model's JSON schema as `response_json_schema` takes it, and the check that refuses at
start what Gemini cannot express.

google-genai 3.6 passes `response_json_schema` through as given (its `_transformers.t_json_schema` is the identity and
a model class is not serialised), and its own pydantic conversion (`t_schema`, for the older `response_schema`) targets
the OpenAPI subset: it inlines every reference, cuts a recursive one to `{}` and fails on tuples. So the schema sent
is pydantic's JSON schema of the model (what the SDK builds for a JSON-schema declaration of a pydantic type, in its
automatic function calling), fitted to the keywords the API documents for `response_json_schema` (the SDK's own
docstring of the field): keywords outside that list only narrow a value (a string's length or pattern, an exclusive
bound, a default) and are left out; the core validates every answer against the model and repairs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError

# The keywords `response_json_schema` supports (google.genai.types.GenerateContentConfig.response_json_schema).
KEYWORDS = frozenset(
    {
        "$id",
        "$defs",
        "$ref",
        "$anchor",
        "type",
        "format",
        "title",
        "description",
        "enum",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "anyOf",
        "oneOf",
        "properties",
        "additionalProperties",
        "required",
        "propertyOrdering",
    }
)
SCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf")
SCHEMA_VALUES = ("items", "additionalProperties")


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` (a pydantic JSON schema) that `response_json_schema` takes: a one-item `allOf` merged into
    its node, `const` as a one-value `enum` (strings and numbers: the only enums Gemini takes), a `$ref`'s sibling
    keywords dropped (Gemini allows none but `$`-keywords beside it), every other unsupported keyword dropped."""
    node = dict(schema)
    all_of = node.pop("allOf", None)
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        node = {**node, **all_of[0]}
    if "$ref" in node:
        return {key: value for key, value in node.items() if key.startswith("$")}
    const = node.pop("const", None)
    if isinstance(const, (str, int, float)) and not isinstance(const, bool):
        node["enum"] = [const]
    if node.get("enum") and not all(isinstance(value, (str, int, float)) and not isinstance(value, bool) for value in node["enum"]):
        del node["enum"]
    fitted = {key: value for key, value in node.items() if key in KEYWORDS}
    for key in ("properties", "$defs"):
        if isinstance(fitted.get(key), dict):
            fitted[key] = {name: gemini_schema(child) for name, child in fitted[key].items()}
    for key in SCHEMA_VALUES:
        if isinstance(fitted.get(key), dict):
            fitted[key] = gemini_schema(fitted[key])
    for key in SCHEMA_LISTS:
        if isinstance(fitted.get(key), list):
            fitted[key] = [gemini_schema(child) for child in fitted[key]]
    return fitted


def required_cycle(schema: dict[str, Any]) -> str | None:
    """The place (`Model.field`) where `schema` refers back to a definition through required properties only, or None.

    Gemini unrolls a recursive reference a few levels, so it takes one only inside a property that may be left out
    ("cyclic references ... may only be used within non-required properties"); a nullable one is not enough."""
    defs = schema.get("$defs", {})
    edges: dict[str, list[tuple[str, str]]] = {}
    for owner, node in [("", schema), *defs.items()]:
        edges[owner] = list(_required_refs(node, node.get("title", owner) if owner else schema.get("title", "output")))
    for start in defs:
        found = _cycle_from(start, edges, [start], set())
        if found is not None:
            return found
    return None


def check_schema(config: EngineConfig[EngineOptions], model_name: str, schema: dict[str, Any]) -> None:
    """A ConfigError naming what of a model's `schema` Gemini's structured output cannot express, if anything."""
    place = required_cycle(schema)
    if place is not None:
        raise ConfigError(
            f"Engine '{config.name}': Gemini's structured output cannot express {place} in {model_name}: a recursive reference "
            "reached through required fields only, where Gemini takes recursion only inside a field that may be left out. "
            "Give that field a default (children: list[Node] = [], or parent: Node | None = None)."
        )


def _required_refs(node: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """(definition name, path) of each `$ref` below `node` reached through required properties only."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield ref.rsplit("/", 1)[-1], path
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        if name in required and isinstance(child, dict):
            yield from _required_refs(child, f"{path}.{name}")
    for key in SCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            yield from _required_refs(node[key], path)
    for key in (*SCHEMA_LISTS, "allOf"):
        for child in node.get(key, []):
            if isinstance(child, dict):
                yield from _required_refs(child, path)


def _cycle_from(name: str, edges: dict[str, list[tuple[str, str]]], stack: list[str], done: set[str]) -> str | None:
    """The path of the first reference that closes a cycle of required references from `stack`'s last definition."""
    for target, path in edges.get(name, []):
        if target in stack:
            return path
        if target not in done:
            found = _cycle_from(target, edges, [*stack, target], done)
            if found is not None:
                return found
            done.add(target)
    return None
