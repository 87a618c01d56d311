"""The output-model matrix for OpenAI's strict structured output: for each kind of model, what the openai backend
sends (checked against the rules OpenAI publishes for strict mode, written out here on their own) and that answers
round-trip through a chain on the loopback server, on the Responses API and on Chat Completions. A model strict
mode cannot express is refused before any request, naming the field."""

from __future__ import annotations

from enum import Enum
import json
import re
from typing import Any, Generic, Literal, TypeVar

import httpx2
import openai
from pydantic import BaseModel, Field
import pytest

from chainette import Chain, Step, register_engine
from chainette.backends.fake import synthesize
from chainette.errors import ConfigError
from chainette.testing import FakeServer
from chainette_openai import check_output_model
from chainette_openai.strict import strict_schema

T = TypeVar("T")
KEY = "sk-test-MATRIX-0123"
# OpenAI strict mode (Structured Outputs guide, "Supported schemas"): these keywords and no others.
STRICT_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const", "$ref", "$defs",
    "description", "title", "default", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minItems", "maxItems",
}  # fmt: skip
NAME_RULE = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class Inner(BaseModel):
    code: str


class Nested(BaseModel):
    inner: Inner = Field(description="A described nested model: a $ref with a sibling")
    others: list[Inner] = Field(description="A list of models")


class Maybe(BaseModel):
    note: str | None = None
    inner: Inner | None = Field(None, description="An optional described model")


class Colour(str, Enum):
    RED = "red"
    BLUE = "blue"


class Choices(BaseModel):
    mood: Literal["happy", "sad"]
    colour: Colour
    fixed: Literal["always"]


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


class Box(BaseModel, Generic[T]):
    item: T


class Constrained(BaseModel):
    word: str = Field(min_length=2, max_length=20, pattern=r"^[a-z]+$")
    score: int = Field(ge=0, le=10)
    ratio: float = Field(gt=0, lt=1)
    tags: set[str] = Field(max_length=3)
    site: str = Field(json_schema_extra={"format": "uri"})


class Mapping(BaseModel):
    counts: dict[str, int]


MODELS: list[type[BaseModel]] = [Nested, Maybe, Choices, Tree, Box[int], Box[Inner], Constrained]
ANSWERS: dict[str, Any] = {
    "Tree": {"value": 1, "children": [{"value": 2, "children": []}]},
    "Constrained": {"word": "abc", "score": 3, "ratio": 0.5, "tags": ["x"], "site": "https://example.org"},
}


def strict_violations(node: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    """Where `node` breaks OpenAI's published strict-mode rules."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return problems
    unknown = set(node) - STRICT_KEYWORDS
    if unknown:
        problems.append(f"{path}: keywords strict mode does not support: {sorted(unknown)}")
    if "$ref" in node and len(node) > 1:
        problems.append(f"{path}: a $ref with siblings")
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") is not False:
            problems.append(f"{path}: an object without additionalProperties: false")
        if sorted(node.get("required", [])) != sorted(node.get("properties", {})):
            problems.append(f"{path}: not every property is required")
    for name, child in node.get("properties", {}).items():
        problems += strict_violations(child, root, f"{path}.{name}")
    for name, child in node.get("$defs", {}).items():
        problems += strict_violations(child, root, f"$defs.{name}")
    for index, child in enumerate(node.get("anyOf", [])):
        problems += strict_violations(child, root, f"{path}|{index}")
    problems += strict_violations(node.get("items"), root, f"{path}[]")
    return problems


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_what_is_sent_follows_the_strict_rules(model):
    schema = strict_schema(model)
    assert strict_violations(schema, schema) == []
    assert schema["type"] == "object" and "anyOf" not in schema, "the root is an object"


def test_described_nested_models_are_inlined_not_wrapped_in_allof():
    nested = strict_schema(Nested)["properties"]["inner"]
    assert "allOf" not in json.dumps(strict_schema(Nested))
    assert nested["description"] == "A described nested model: a $ref with a sibling"
    assert nested["properties"] == {"code": {"title": "Code", "type": "string"}} and nested["additionalProperties"] is False


def test_recursive_models_keep_their_reference():
    tree = strict_schema(Tree)
    assert tree["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert tree["$defs"]["Tree"]["additionalProperties"] is False


def test_narrowing_keywords_strict_mode_lacks_are_left_to_validation():
    """minLength, maxLength, uniqueItems and unknown formats are not sent; the supported bounds and pattern are."""
    fields = strict_schema(Constrained)["properties"]
    assert fields["word"] == {"title": "Word", "type": "string", "pattern": "^[a-z]+$"}
    assert (fields["score"]["minimum"], fields["score"]["maximum"]) == (0, 10)
    assert (fields["ratio"]["exclusiveMinimum"], fields["ratio"]["exclusiveMaximum"]) == (0, 1)
    assert fields["tags"] == {"title": "Tags", "type": "array", "items": {"type": "string"}, "maxItems": 3}
    assert "format" not in fields["site"]
    assert Constrained.model_json_schema()["properties"]["word"]["minLength"] == 2, "the model itself still says so"


def respond_with_a_valid(model: type[BaseModel]):
    """A server answer valid for `model` itself (the schema sent lacks the keywords validation checks)."""
    name = model.__name__.split("[")[0]
    return lambda body: json.dumps(ANSWERS.get(name) or synthesize(model.model_json_schema(), seed_text=str(body)))


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_answers_round_trip_through_a_chain(model, api, tmp_path):
    with FakeServer(api_key=KEY, respond=respond_with_a_valid(model)) as server:
        register_engine(
            "gpt", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, profile="openai", api=api
        )
        step = Step(id="out", output_model=model, engine_name="gpt", user_prompt="{{ text }}")
        result = Chain(name="matrix", steps=[step]).run([{"text": "a"}, {"text": "b"}], output_dir=tmp_path / "run", cache=False)
    assert result.errors == []
    assert [type(answer) for answer in result["out"]] == [model, model]
    sent = server.chat_requests()[0]
    if api == "responses":
        assert server.requests[0]["path"] == "/v1/responses"
        wanted = sent["text"]["format"]
        assert (wanted["type"], wanted["strict"], sent["store"]) == ("json_schema", True, False)
    else:
        wanted = sent["response_format"]["json_schema"]
        assert wanted["strict"] is True
    assert NAME_RULE.fullmatch(wanted["name"])
    assert wanted["schema"] == strict_schema(model)


def test_a_dict_field_is_refused_before_any_request_naming_the_field(tmp_path):
    """Strict mode would force `dict[str, int]` to `{}` (or refuse it): the run stops at start with what to do."""
    with FakeServer(api_key=KEY) as server:
        register_engine("gpt", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, profile="openai")
        step = Step(id="out", output_model=Mapping, engine_name="gpt", user_prompt="{{ text }}")
        with pytest.raises(ConfigError) as info:
            Chain(name="matrix", steps=[step]).run([{"text": "a"}], output_dir=tmp_path / "run", cache=False)
    message = str(info.value)
    assert message.startswith("Step 'out': Engine 'gpt': ")
    assert "Mapping.counts" in message and "strict=False" in message
    assert server.chat_requests() == []


def test_strict_false_sends_a_dict_field_as_it_is(tmp_path):
    with FakeServer(api_key=KEY) as server:
        register_engine(
            "gpt", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, profile="openai", strict=False
        )
        step = Step(id="out", output_model=Mapping, engine_name="gpt", user_prompt="{{ text }}")
        result = Chain(name="matrix", steps=[step]).run([{"text": "a"}], output_dir=tmp_path / "run", cache=False)
    assert result.errors == []
    sent = server.chat_requests()[0]["response_format"]["json_schema"]
    assert "strict" not in sent and sent["schema"] == Mapping.model_json_schema()


def test_the_refusal_also_holds_for_the_openai_api_itself():
    """Without endpoint= (the OpenAI API, strict by default) the check needs no server at all."""
    register_engine("api", backend="openai", model="gpt-4o-mini", api_key=KEY)
    step = Step(id="out", output_model=Box[dict[str, Inner]], engine_name="api", user_prompt="{{ text }}")
    with pytest.raises(ConfigError, match=r"Box\[dict\[str, Inner\]\]\.item"):
        Chain(name="matrix", steps=[step]).run([{"text": "a"}], cache=False)


@pytest.mark.parametrize("model", [m for m in MODELS if m is not Constrained], ids=lambda m: m.__name__)
async def test_the_schema_is_what_the_sdks_own_parse_sends(model):
    """`client.responses.parse(text_format=Model)`, the SDK's public structured-output path, sends the same schema."""
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(500, json={"error": {"message": "captured"}})

    client = openai.AsyncOpenAI(api_key=KEY, max_retries=0, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    with pytest.raises(openai.InternalServerError):
        await client.responses.parse(model="gpt-test", input="hi", text_format=model)
    await client.close()
    assert sent[0]["text"]["format"]["schema"] == strict_schema(model)


def nested(levels: int) -> type[BaseModel]:
    """A model whose objects nest `levels` deep."""
    model = type("Level1", (BaseModel,), {"__annotations__": {"leaf": str}})
    for level in range(2, levels + 1):
        model = type(f"Level{level}", (BaseModel,), {"__annotations__": {"child": model}})
    return model


def test_strict_modes_size_limits_are_checked_before_any_request():
    """Ten levels of nesting pass, eleven are refused; so are more than 1000 enum values (recursion is not depth)."""
    config = register_engine("api", backend="openai", model="gpt-4o-mini", api_key=KEY)
    check_output_model(config, nested(10))
    check_output_model(config, Tree)
    with pytest.raises(ConfigError, match=r"11 levels of nested objects \(at most 10\)"):
        check_output_model(config, nested(11))
    many = Enum("Many", {f"v{i}": f"v{i}" for i in range(1001)})
    with pytest.raises(ConfigError, match=r"1001 enum values \(at most 1000\)"):
        check_output_model(config, type("Wide", (BaseModel,), {"__annotations__": {"value": many}}))
