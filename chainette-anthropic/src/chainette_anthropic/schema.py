"""The schema an Anthropic request asks for: the SDK's own transform of the output model (`anthropic.transform_schema`,
which `messages.parse` uses) for JSON outputs, the model's plain schema as a forced tool's input.

The transform keeps what JSON outputs take: it closes every object (`additionalProperties: false`), keeps the string
formats and `minItems` 0 or 1 it knows, and moves every other keyword (a length, a range, a pattern) into the field's
description, where the model reads it; the core validates every answer against the model anyway and repairs it. Two
things it cannot express are refused before any request by `check_json_outputs`: an object with free keys (a dict
field, a model allowing extra fields), which the closing turns into an always-empty object, and a recursive model,
which JSON outputs reject.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from chainette.client import Request
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.schema import subschemas


def json_output_schema(request: Request) -> dict[str, Any]:
    """The request's schema as the anthropic SDK itself sends it for JSON outputs (`output_config.format.schema`): its
    transform of the output model (of the bare schema for a request without one)."""
    from anthropic import transform_schema

    return transform_schema(request.output_model or request.schema)


def free_key_objects(schema: dict[str, Any]) -> list[str]:
    """The places (`Model.field` paths) of a plain JSON schema holding an object with free keys."""
    return [
        path
        for path, node in subschemas(schema, schema.get("title", "output"))
        if node.get("type") == "object" and (node.get("additionalProperties") not in (None, False) or "properties" not in node)
    ]


def recursive_definitions(schema: dict[str, Any]) -> list[str]:
    """The definitions of `schema` that reach themselves through references."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def reached(node: dict[str, Any]) -> set[str]:
        return {str(found["$ref"]).rsplit("/", 1)[-1] for _, found in subschemas(node, "") if "$ref" in found}

    edges = {name: reached(definition) for name, definition in defs.items()}
    found = []
    for name in defs:
        seen, frontier = set(), set(edges[name])
        while frontier:
            current = frontier.pop()
            if current == name:
                found.append(name)
                break
            if current not in seen:
                seen.add(current)
                frontier |= edges.get(current, set())
    return found


def check_json_outputs(config: EngineConfig[EngineOptions], model: type[BaseModel]) -> None:
    """A ConfigError naming what of `model` Anthropic's JSON outputs cannot express, if anything."""
    schema = model.model_json_schema()
    advice = (
        "or set structured_output='tool' on the engine, which sends the schema as it is as a tool's input (answers are "
        "still validated against the model, and repaired once)."
    )
    places = free_key_objects(schema)
    if places:
        raise ConfigError(
            f"Engine '{config.name}': Anthropic's JSON outputs cannot express {', '.join(places)} in {model.__name__}: an object "
            "with free keys (a dict field, or a model that allows extra fields), which the anthropic SDK closes to an object "
            f"without keys. Make it a list of key/value models, {advice}"
        )
    recursive = recursive_definitions(schema)
    if recursive:
        raise ConfigError(
            f"Engine '{config.name}': Anthropic's JSON outputs take no recursive schema, and {', '.join(recursive)} in "
            f"{model.__name__} contains itself. Bound the nesting with distinct models, {advice}"
        )
