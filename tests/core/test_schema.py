"""Schema helpers: schema names, JSON extraction, repair conversation."""

from __future__ import annotations

import re
from typing import Generic, TypeVar

from pydantic import BaseModel

from chainette.schema import extract_json, repair_messages, schema_name

T = TypeVar("T")


class Box(BaseModel, Generic[T]):
    item: T


def test_schema_name_follows_openai_name_rule():
    """Every schema name a request gives matches ^[a-zA-Z0-9_-]{1,64}$, generics and long names included."""
    long = type("N" * 80, (BaseModel,), {"__annotations__": {"x": int}})
    for model in (Box[int], Box[dict[str, list[int]]], long, Box):
        name = schema_name(model)
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name), name
    assert schema_name(Box[int]) == "Box_int_"


def test_extract_json_from_fences_and_prose():
    assert extract_json(' {"a": 1} ') == '{"a": 1}'
    assert extract_json('Here:\n```json\n{"a": 1}\n```\nThanks') == '{"a": 1}'
    assert extract_json('Sure! The answer is {"a": {"b": 2}} as requested.') == '{"a": {"b": 2}}'
    assert extract_json("no json") == "no json"


def test_repair_messages_feed_back_answer_and_error():
    messages = repair_messages([{"role": "user", "content": "q"}], "bad", "label: Field required")
    assert messages[1] == {"role": "assistant", "content": "bad"}
    assert "label: Field required" in messages[2]["content"]
