"""OpenAI strict structured output: a model's schema through the openai SDK's own strict conversion (the one
`client.chat.completions.parse` and `client.responses.parse` use), then fitted to what strict mode accepts.

Strict mode takes a subset of JSON Schema. Keywords outside it that only narrow a value (a string's length,
unique items, some formats) are left out of what is sent: the core validates every answer against the model
anyway and asks for a repair. A field strict mode cannot express at all (an object with free keys, such as
`dict[str, X]`) is refused before any request by `check_strict`.
"""

from __future__ import annotations

from typing import Any

from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.schema import subschemas

# Keywords strict mode rejects that only narrow a value: dropped from the schema sent, checked by validation.
NARROWING_KEYWORDS = frozenset(
    {"minLength", "maxLength", "uniqueItems", "minProperties", "maxProperties", "propertyNames", "contains", "minContains", "maxContains"}
)
FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
# Strict mode's limits on one schema (OpenAI's Structured Outputs guide, "Supported schemas").
MAX_DEPTH, MAX_PROPERTIES, MAX_ENUM_VALUES = 10, 5000, 1000


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s schema as strict mode takes it: the SDK's conversion (every object closed, every field required,
    described references inlined), without the narrowing keywords and formats strict mode does not know."""
    schema = to_strict_json_schema(model)
    for _, node in subschemas(schema, model.__name__):
        for keyword in NARROWING_KEYWORDS & node.keys():
            del node[keyword]
        if node.get("format") not in (None, *FORMATS):
            del node["format"]
    return schema


def open_objects(schema: dict[str, Any]) -> list[str]:
    """The places in a strict `schema` (`Model.field` paths) holding an object with free keys, which strict mode
    cannot express: it only takes objects whose every key is declared."""
    found = []
    for path, node in subschemas(schema, schema.get("title", "output")):
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            found.append(path)
    return found


def over_limits(schema: dict[str, Any]) -> list[str]:
    """What makes a strict `schema` larger than strict mode takes: its object nesting (a recursive reference does
    not count), its properties in all, its enum values in all."""
    found = []
    depth = _depth(schema, schema.get("$defs", {}), frozenset())
    if depth > MAX_DEPTH:
        found.append(f"{depth} levels of nested objects (at most {MAX_DEPTH})")
    nodes = [node for _, node in subschemas(schema, "")]
    properties = sum(len(node.get("properties", {})) for node in nodes)
    if properties > MAX_PROPERTIES:
        found.append(f"{properties} properties (at most {MAX_PROPERTIES})")
    values = sum(len(node.get("enum", [])) for node in nodes)
    if values > MAX_ENUM_VALUES:
        found.append(f"{values} enum values (at most {MAX_ENUM_VALUES})")
    return found


def check_strict(config: EngineConfig[EngineOptions], model: type[BaseModel]) -> None:
    """A ConfigError naming what of `model` the engine's strict mode cannot express, if anything."""
    schema = strict_schema(model)
    too_big = over_limits(schema)
    if too_big:
        raise ConfigError(
            f"Engine '{config.name}': {model.__name__} is larger than OpenAI's strict structured output takes: "
            f"{', '.join(too_big)}. Split the step into smaller output models, or set strict=False on the engine to send "
            "the schema without strict mode (answers are still validated against the model, and repaired once)."
        )
    places = open_objects(schema)
    if places:
        raise ConfigError(
            f"Engine '{config.name}': OpenAI's strict structured output cannot express {', '.join(places)} in {model.__name__}: "
            "an object with free keys (a dict field, or a model that allows extra fields), where strict mode needs every key "
            "declared. Make it a list of key/value models, or set strict=False on the engine to send the schema without "
            "strict mode (answers are still validated against the model, and repaired once)."
        )


def _depth(node: dict[str, Any], defs: dict[str, Any], entered: frozenset[str]) -> int:
    """The object nesting below `node`, following references except into a definition already `entered`."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return 0 if name in entered or name not in defs else _depth(defs[name], defs, entered | {name})
    children = [*node.get("properties", {}).values(), *node.get("anyOf", []), *node.get("prefixItems", [])]
    if isinstance(node.get("items"), dict):
        children.append(node["items"])
    below = max((_depth(child, defs, entered) for child in children), default=0)
    return below + (1 if "properties" in node else 0)
