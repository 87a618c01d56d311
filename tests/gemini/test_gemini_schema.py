"""What Gemini's response_json_schema is sent for an output model, and what is refused at start; the price table."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
import pytest

from chainette.engines import engine_price, register_engine
from chainette.errors import ConfigError
from chainette.plugins import get_plugins
from chainette.pricing import Price
from chainette.schema import json_schema
from chainette_gemini.schema import KEYWORDS, gemini_schema, required_cycle


class Inner(BaseModel):
    x: int = Field(ge=0, le=5)


class Shapes(BaseModel):
    name: str = Field(min_length=2, pattern="^a")
    inner: Inner = Field(description="a described nested model")
    maybe: int | None = None
    kind: Literal["a", "b"]
    one: Literal["z"]
    either: int | str
    items: list[Inner] = Field(min_length=1, max_length=3)
    pair: tuple[int, str]
    counts: dict[str, int]
    ratio: float = Field(gt=0)


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Strict(BaseModel):
    value: int
    children: list[Strict]


class Forest(BaseModel):
    trees: list[Strict]


def keywords(node: object) -> set[str]:
    if isinstance(node, dict):
        found = set(node) - {"properties", "$defs"}
        for key, child in node.items():
            if key in ("properties", "$defs"):
                found |= set().union(*(keywords(grand) for grand in child.values()))
            else:
                found |= keywords(child)
        return found
    if isinstance(node, list):
        return set().union(*(keywords(child) for child in node)) if node else set()
    return set()


def test_only_the_keywords_gemini_documents_are_sent():
    sent = gemini_schema(json_schema(Shapes))
    assert keywords(sent) <= KEYWORDS
    properties = sent["properties"]
    assert properties["inner"] == {"$ref": "#/$defs/Inner"}, "no keyword beside a $ref"
    assert properties["one"]["enum"] == ["z"] and "const" not in properties["one"]
    assert "minLength" not in properties["name"] and "pattern" not in properties["name"]
    assert (properties["items"]["minItems"], properties["items"]["maxItems"]) == (1, 3)
    assert sent["$defs"]["Inner"]["properties"]["x"] == {"type": "integer", "minimum": 0, "maximum": 5, "title": "X"}
    assert properties["counts"]["additionalProperties"] == {"type": "integer"}
    assert [len(properties["pair"]["prefixItems"]), "exclusiveMinimum" in properties["ratio"]] == [2, False]


def test_the_schema_given_is_left_as_it_was():
    schema = json_schema(Shapes)
    gemini_schema(schema)
    assert schema == json_schema(Shapes)


def test_recursion_through_an_optional_field_is_sent():
    assert required_cycle(json_schema(Node)) is None


@pytest.mark.parametrize(("model", "place"), [(Strict, "Strict.children"), (Forest, "Strict.children")])
def test_recursion_through_required_fields_only_is_refused_naming_the_field(model, place):
    assert required_cycle(json_schema(model)) == place
    config = register_engine("g", backend="gemini", model="gemini-2.5-flash", api_key="k")
    with pytest.raises(ConfigError, match=rf"{place}.*default"):
        get_plugins().hooks("gemini").check_output_model(config=config, model=model)


def test_prices_follow_the_table_and_halve_in_batch_mode():
    flash = engine_price(register_engine("g", backend="gemini", model="gemini-2.5-flash", api_key="k"))
    assert flash == Price(0.30, 2.50, cache_read=0.03)
    assert engine_price(register_engine("g", backend="gemini", model="models/gemini-2.5-pro", api_key="k", batch=True)) == Price(
        0.625, 5.0, cache_read=0.0625
    )
    assert engine_price(register_engine("g", backend="gemini", model="gemini-9-unknown", api_key="k")) is None
    assert engine_price(register_engine("g", backend="gemini", model="gemini-2.5-flash", endpoint="http://127.0.0.1:9")) is None
