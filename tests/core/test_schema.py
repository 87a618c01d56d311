"""Schema helpers: strict form, JSON extraction, repair conversation."""

from __future__ import annotations

from pydantic import BaseModel

from chainette.schema import extract_json, json_schema, repair_messages, strict_json_schema


class Inner(BaseModel):
    default: str = "x"
    n: int | None = None


class Outer(BaseModel):
    inner: Inner
    tags: list[Inner] = []


def test_strict_schema_closes_every_object_and_requires_every_field():
    strict = strict_json_schema(json_schema(Outer))
    assert strict["additionalProperties"] is False
    assert strict["required"] == ["inner", "tags"]
    inner = strict["$defs"]["Inner"]
    assert inner["additionalProperties"] is False
    assert inner["required"] == ["default", "n"]
    assert "default" in inner["properties"], "a field named 'default' must survive"
    assert "default" not in inner["properties"]["default"]
    assert "default" not in strict["properties"]["tags"]


def test_strict_schema_leaves_original_untouched():
    schema = json_schema(Outer)
    strict_json_schema(schema)
    assert "additionalProperties" not in schema


def test_extract_json_from_fences_and_prose():
    assert extract_json(' {"a": 1} ') == '{"a": 1}'
    assert extract_json('Here:\n```json\n{"a": 1}\n```\nThanks') == '{"a": 1}'
    assert extract_json('Sure! The answer is {"a": {"b": 2}} as requested.') == '{"a": {"b": 2}}'
    assert extract_json("no json") == "no json"


def test_repair_messages_feed_back_answer_and_error():
    messages = repair_messages([{"role": "user", "content": "q"}], "bad", "label: Field required")
    assert messages[1] == {"role": "assistant", "content": "bad"}
    assert "label: Field required" in messages[2]["content"]
