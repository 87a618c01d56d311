"""Structured output: the schema of an output model, the instruction that asks for it,
extracting JSON from an answer, and the repair request after a failed validation."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
import json
import re
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


@lru_cache(maxsize=256)
def _cached_schema(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), separators=(",", ":"))


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` (a fresh copy each call, so callers may change it)."""
    schema: dict[str, Any] = json.loads(_cached_schema(model))
    return schema


def format_instruction(model: type[BaseModel]) -> str:
    """The text appended to the system prompt to ask for JSON following `model`'s schema."""
    return "Answer with a single JSON object and nothing else. It must follow this JSON schema:\n" + _cached_schema(model)


def schema_name(model: type[BaseModel]) -> str:
    """The name a request gives `model`'s schema: its class name with every character outside `[a-zA-Z0-9_-]`
    replaced by '_' and cut at 64 (the rule OpenAI's `json_schema.name` follows; `Box[int]` becomes `Box_int_`)."""
    return _NAME_UNSAFE.sub("_", model.__name__)[:64] or "Output"


def parse_answer(model: type[M], text: str) -> M:
    """The answer `text` as a `model` (ValidationError otherwise): its JSON object found by `extract_json`; raw
    control characters inside strings (a newline or tab some grammars let through) are read as the characters they are."""
    found = extract_json(text)
    try:
        return cast(M, model.__pydantic_validator__.validate_json(found))  # model_validate_json's own work, half its cost
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            raise
        try:
            lenient = json.loads(found, strict=False)
        except ValueError:
            raise exc from None
        return model.model_validate(lenient)


def json_data(instance: BaseModel) -> dict[str, Any]:
    """`instance`'s fields as JSON values: what `model_dump(mode="json")` gives, from the model's serializer directly
    (at a third of the cost: it is done for every row)."""
    data: dict[str, Any] = type(instance).__pydantic_serializer__.to_python(instance, mode="json")
    return data


def extract_json(text: str) -> str:
    """The JSON object in `text`: as is, inside a code fence, or between the first '{' and the last '}'."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return stripped
    fenced = _FENCE.search(stripped)
    if fenced:
        return fenced.group(1).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        return stripped[start : end + 1]
    return stripped


def repair_messages(messages: list[dict[str, Any]], answer: str, error: str) -> list[dict[str, Any]]:
    """The conversation for one repair attempt: the failed answer and the validation error fed back."""
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": "Your answer is not valid for the required JSON schema:\n"
            + error
            + "\nAnswer again with only the corrected JSON object.",
        },
    ]


def subschemas(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object inside `node` with a readable path: `Model.field`, `[]` for items, the $defs' own names."""
    yield path, node
    for name, child in node.get("$defs", {}).items():
        yield from subschemas(child, name)
    for name, child in node.get("properties", {}).items():
        yield from subschemas(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from subschemas(node[key], f"{path}[]" if key == "items" else f"{path}{{}}")
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        for child in node.get(key, []):
            yield from subschemas(child, path)
