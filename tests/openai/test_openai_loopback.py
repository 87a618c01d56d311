"""The openai backend against the loopback FakeServer: real HTTP, faults, and a whole chain."""

from __future__ import annotations

import json
import re
import socket
import threading

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, SamplingParams, Step, apply, register_engine
from chainette.client import Request
from chainette.engines import EngineConfig
from chainette.errors import EngineError, RetryableError, RowError
from chainette.plugins import get_plugins
from chainette.testing import FakeServer
from chainette.testing.server import Fault
from chainette_openai import OpenAIOptions
from chainette_openai.client import OpenAIClient

KEY = "sk-test-LOOPBACK-9f8e7d6c5b4a"


QUOTA = {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota"}}


class Person(BaseModel):
    name: str
    age: int


def client_for(url: str, *, api_key: str | None = KEY, **options) -> OpenAIClient:
    config = EngineConfig(
        name="loop", backend="openai", model="fake-model", endpoint=url, api_key=api_key, options=OpenAIOptions(**options)
    )
    return OpenAIClient(config)


def person_request() -> Request:
    return Request([{"role": "user", "content": "a person"}], Person.model_json_schema(), "Person", output_model=Person)


async def test_answer_usage_and_reasoning_over_http():
    with FakeServer(api_key=KEY, reasoning="thinking...") as server:
        client = client_for(f"{server.base_url}/v1")
        answer = await client.complete(person_request())
        await client.aclose()
    assert Person.model_validate_json(answer.text)
    assert answer.reasoning == "thinking..."
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 7)
    sent = server.requests[0]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Person", "schema": Person.model_json_schema()},
    }, "a compatible server (the generic profile) gets the schema as it is, without OpenAI's strict mode"


async def test_the_openai_profile_on_a_compatible_server_sends_the_strict_schema():
    with FakeServer(api_key=KEY) as server:
        client = client_for(f"{server.base_url}/v1", profile="openai")
        answer = await client.complete(person_request())
        await client.aclose()
    assert Person.model_validate_json(answer.text)
    sent = server.chat_requests()[0]
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["response_format"]["json_schema"]["schema"]["additionalProperties"] is False


async def test_wrong_key_is_an_engine_error_without_the_key():
    with FakeServer(api_key="sk-test-the-right-one") as server:
        client = client_for(f"{server.base_url}/v1")
        with pytest.raises(EngineError) as info:
            await client.complete(person_request())
        await client.aclose()
    assert info.value.kind == "authentication"
    assert KEY not in str(info.value) and KEY not in repr(info.value)


async def test_unknown_model_is_an_engine_error(fake_server):
    config = EngineConfig(
        name="loop", backend="openai", model="no-such-model", endpoint=f"{fake_server.base_url}/v1", options=OpenAIOptions()
    )
    client = OpenAIClient(config)
    with pytest.raises(EngineError) as info:
        await client.complete(person_request())
    await client.aclose()
    assert info.value.kind == "not_found"
    assert "no-such-model" in str(info.value)


@pytest.mark.parametrize(
    ("fault", "cls", "kind", "retry_after"),
    [
        (Fault(status=429, retry_after=3), RetryableError, "http_429", 3.0),
        (Fault(status=500), RetryableError, "http_500", None),
        (Fault(status=503), RetryableError, "http_503", None),
        (Fault(status=400), RowError, "http_400", None),
        (Fault(drop=True), RetryableError, "connection", None),
        (Fault(status=429, body=QUOTA), EngineError, "quota", None),
        (Fault(status=501), EngineError, "unsupported", None),
    ],
)
async def test_injected_faults(fake_server, fault, cls, kind, retry_after):
    fake_server.fail_next(fault)
    client = client_for(f"{fake_server.base_url}/v1")
    with pytest.raises(cls) as info:
        await client.complete(person_request())
    assert info.value.kind == kind
    assert info.value.retry_after == retry_after
    assert len(fake_server.chat_requests()) == 1
    assert Person.model_validate_json((await client.complete(person_request())).text)
    await client.aclose()


async def test_timeout(fake_server):
    fake_server.fail_next(Fault(hang=0.5))
    client = client_for(f"{fake_server.base_url}/v1", timeout=0.1)
    with pytest.raises(RetryableError) as info:
        await client.complete(person_request())
    await client.aclose()
    assert info.value.kind == "timeout"


async def test_connection_refused_on_a_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(RetryableError) as info:
        await client.complete(person_request())
    await client.aclose()
    assert info.value.kind == "connection"
    assert f"127.0.0.1:{port}" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)


class Row(BaseModel):
    text: str


class Tagged(BaseModel):
    tag: str
    length: int


class Word(BaseModel):
    value: str


class Doubled(BaseModel):
    n: int


class Combined(BaseModel):
    text: str


def respond(body: dict) -> str:
    """Answers derived from the row's own text, so that any misalignment shows (a repair request repeats the first answer)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    kind, value = re.match(r"(\w+): (.*)", user, re.DOTALL).groups()
    if kind == "Tag":
        return "not json" if value == "broken" else json.dumps({"tag": f"T-{value}", "length": len(value)})
    if kind == "Upper":
        return json.dumps({"value": value.upper()})
    if kind == "Lower":
        return json.dumps({"value": value.lower()})
    return json.dumps({"text": value})


def doubled(item: Tagged) -> Doubled:
    return Doubled(n=item.length * 2)


def test_chain_over_the_fake_server(tmp_path):
    texts = [f"Row{i}Mixed" for i in range(20)]
    texts[7] = "broken"
    with FakeServer(api_key=KEY, respond=respond) as server:
        upper = Step(id="upper", output_model=Word, engine_name="gpt", user_prompt="Upper: {{ tag.tag }}")
        lower = Step(id="lower", output_model=Word, engine_name="gpt", user_prompt="Lower: {{ tag.tag }}")
        register_engine(
            "gpt", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, max_concurrency=4, profile="openai"
        )
        chain = Chain(
            name="aligned",
            steps=[
                Step(id="tag", output_model=Tagged, engine_name="gpt", user_prompt="Tag: {{ text }}", input_model=Row),
                [Branch("up", [upper]).join("left"), Branch("down", [lower]).join("right")],
                apply(doubled, output_model=Doubled),
                Step(
                    id="final",
                    output_model=Combined,
                    engine_name="gpt",
                    user_prompt="Combine: {{ left.value }}|{{ right.value }}|{{ doubled.n }}",
                    sampling=SamplingParams(temperature=0, max_tokens=40, extra={"top_k": 2}),
                ),
            ],
        )
        result = chain.run([{"text": t} for t in texts], output_dir=tmp_path / "run")
    good = [(i, t) for i, t in enumerate(texts) if t != "broken"]

    assert [e["row_id"] for e in result.errors] == ["7"]
    assert result.errors[0]["step_id"] == "tag"
    assert [m.tag for m in result["tag"]] == [f"T-{t}" for _, t in good]
    assert [m.value for m in result["upper"]] == [f"T-{t}".upper() for _, t in good]
    assert [m.value for m in result["lower"]] == [f"T-{t}".lower() for _, t in good]
    assert [m.n for m in result["doubled"]] == [2 * len(t) for _, t in good]
    expected = {str(i): f"T-{t}".upper() + "|" + f"T-{t}".lower() + f"|{2 * len(t)}" for i, t in good}
    assert {r["row_id"]: r["text"] for r in result.records("final")} == expected
    flat = result.flattened
    assert [line["row_id"] for line in flat] == [str(i) for i, _ in good]
    for line, (_, text) in zip(flat, good, strict=True):
        assert line["chain_input.text"] == text
        assert line["tag.length"] == len(text)
        assert line["left.value"] == f"T-{text}".upper()
        assert line["right.value"] == f"T-{text}".lower()
        assert line["final.text"] == expected[line["row_id"]]

    bodies = server.chat_requests()
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert all(b["response_format"]["json_schema"]["strict"] for b in bodies)
    final_bodies = [b for b in bodies if b["messages"][1]["content"].startswith("Combine:")]
    assert len(final_bodies) == len(good)
    assert all(b["temperature"] == 0 and b["max_completion_tokens"] == 40 and b["top_k"] == 2 for b in final_bodies)
    assert not any("top_k" in b for b in bodies if b not in final_bodies)
    assert result.stats["steps"]["tag"]["input_tokens"] == 11 * (len(texts) + 1)


def _start(url: str, model: str = "fake-model", api_key: str | None = KEY) -> None:
    config = register_engine("probe", backend="openai", model=model, endpoint=url, api_key=api_key)
    get_plugins().hooks("openai").ensure_running(config, None, threading.Event())


def test_an_unreachable_endpoint_fails_before_the_first_row():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(EngineError) as caught:
        _start(f"http://127.0.0.1:{port}/v1")
    assert caught.value.kind == "unreachable" and f"127.0.0.1:{port}/v1 does not answer" in str(caught.value)


def test_a_refused_key_fails_before_the_first_row_and_a_missing_model_warns():
    with FakeServer(api_key=KEY) as server:
        with pytest.raises(EngineError) as caught:
            _start(f"{server.base_url}/v1", api_key="sk-wrong-key-0000")
        assert caught.value.kind == "authentication" and "sk-wrong" not in str(caught.value)
        with pytest.warns(UserWarning, match="lists fake-model, not 'other-model'"):
            _start(f"{server.base_url}/v1", model="other-model")
        assert [r for r in server.requests] == [], "probing sends no chat request"
