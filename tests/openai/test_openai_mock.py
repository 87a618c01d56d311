"""The openai client's Chat Completions path against a mocked transport: the request on the wire, answer parsing,
error classification (the Responses API path: test_openai_responses.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
from pydantic import BaseModel
import pytest

from chainette.client import Request
from chainette.engines import EngineConfig, register_engine
from chainette.errors import ConfigError, EngineError, RetryableError, RowError
from chainette.plugins import translate_sampling
from chainette.sampling import SamplingParams
from chainette_openai import OpenAIOptions
import chainette_openai.client as client_module
from chainette_openai.client import OpenAIClient

KEY = "sk-test-PLANTEDKEY-0123456789abcdef"


class Person(BaseModel):
    name: str
    age: int | None = None


SCHEMA = Person.model_json_schema()


def completion(content: Any = '{"name": "Ada"}', *, finish_reason: str = "stop", usage: dict | None = None, **message: Any) -> dict:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class Recorder:
    """A MockTransport handler answering with fixed responses (or raising), recording each request."""

    def __init__(self, *responses: httpx2.Response | Exception):
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def make(recorder: Recorder, **config: Any) -> OpenAIClient:
    options = OpenAIOptions(**{"api": "chat", **config.pop("options", {})})
    settings = {"name": "mock", "backend": "openai", "model": "gpt-test", "api_key": KEY, "options": options, **config}
    return OpenAIClient(EngineConfig(**settings), transport=httpx2.MockTransport(recorder))


def request(**overrides: Any) -> Request:
    values = {
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}],
        "schema": SCHEMA,
        "schema_name": "Person",
        "output_model": Person,
    }
    return Request(**{**values, **overrides})


async def answer_for(response: httpx2.Response | Exception, **config: Any):
    client = make(Recorder(response), **config)
    try:
        return await client.complete(request())
    finally:
        await client.aclose()


async def error_for(response: httpx2.Response | Exception, **config: Any) -> Exception:
    with pytest.raises(Exception) as info:
        await answer_for(response, **config)
    return info.value


async def test_payload_on_the_wire():
    recorder = Recorder(httpx2.Response(200, json=completion()))
    client = make(recorder, options={"organization": "org-9", "project": "proj-9"})
    sampling = {"temperature": 0, "max_completion_tokens": 50, "seed": 3, "top_k": 5, "chat_template_kwargs": {"enable_thinking": False}}
    await client.complete(request(sampling=sampling))
    await client.aclose()
    sent = recorder.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-9"
    assert sent.headers["openai-project"] == "proj-9"
    body = recorder.bodies()[0]
    assert body["model"] == "gpt-test"
    assert body["messages"] == request().messages
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "Person",
            "strict": True,
            "schema": {
                "title": "Person",
                "type": "object",
                "properties": {
                    "name": {"title": "Name", "type": "string"},
                    "age": {"title": "Age", "anyOf": [{"type": "integer"}, {"type": "null"}]},
                },
                "required": ["name", "age"],
                "additionalProperties": False,
            },
        },
    }
    assert body["temperature"] == 0
    assert body["max_completion_tokens"] == 50
    assert body["seed"] == 3
    assert body["top_k"] == 5
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "stream" not in body and "max_tokens" not in body


async def test_endpoint_is_the_base_url():
    recorder = Recorder(httpx2.Response(200, json=completion()))
    await make(recorder, endpoint="http://vllm.internal:8000/v1").complete(request())
    assert str(recorder.requests[0].url) == "http://vllm.internal:8000/v1/chat/completions"


async def test_strict_schema_is_computed_once_per_model(monkeypatch):
    calls = []

    def counting(model):
        calls.append(model)
        return {"counted": len(calls)}

    class Other(BaseModel):
        x: int

    monkeypatch.setattr(client_module, "strict_schema", counting)
    recorder = Recorder(httpx2.Response(200, json=completion()))
    client = make(recorder)
    for _ in range(3):
        await client.complete(request())
    await client.complete(request(schema=Other.model_json_schema(), schema_name="Other", output_model=Other))
    await client.complete(request())
    await client.aclose()
    assert calls == [Person, Other]
    names = [b["response_format"]["json_schema"]["name"] for b in recorder.bodies()]
    assert names == ["Person", "Person", "Person", "Other", "Person"]
    assert [b["response_format"]["json_schema"]["schema"] for b in recorder.bodies()][3] == {"counted": 2}


async def test_a_request_without_a_model_asks_for_its_schema_without_strict_mode():
    recorder = Recorder(httpx2.Response(200, json=completion()))
    client = make(recorder)
    await client.complete(request(output_model=None))
    await client.aclose()
    assert recorder.bodies()[0]["response_format"] == {"type": "json_schema", "json_schema": {"name": "Person", "schema": SCHEMA}}


async def test_answer_text_and_usage():
    usage = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    answer = await answer_for(httpx2.Response(200, json=completion('{"name": "Grace"}', usage=usage)))
    assert answer.text == '{"name": "Grace"}'
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (21, 9)
    assert answer.reasoning is None


async def test_missing_usage_counts_zero():
    answer = await answer_for(httpx2.Response(200, json=completion()))
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (0, 0)


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_reasoning_from_compatible_servers(field):
    answer = await answer_for(httpx2.Response(200, json=completion(**{field: "first I think"})))
    assert answer.reasoning == "first I think"


async def test_refusal_is_a_row_error_with_the_usage():
    usage = {"prompt_tokens": 21, "completion_tokens": 6, "total_tokens": 27}
    error = await error_for(httpx2.Response(200, json=completion(None, refusal="I can't help with that.", usage=usage)))
    assert isinstance(error, RowError) and not isinstance(error, EngineError)
    assert error.kind == "refusal"
    assert error.raw == "I can't help with that."
    assert (error.usage.input_tokens, error.usage.output_tokens) == (21, 6)


async def test_the_content_filter_is_a_row_error_with_the_usage():
    usage = {"prompt_tokens": 21, "completion_tokens": 512, "total_tokens": 533}
    error = await error_for(httpx2.Response(200, json=completion('{"name": "Ad', finish_reason="content_filter", usage=usage)))
    assert isinstance(error, RowError)
    assert error.kind == "content_filter"
    assert error.raw == '{"name": "Ad'
    assert (error.usage.input_tokens, error.usage.output_tokens) == (21, 512)


async def test_an_answer_cut_off_at_max_tokens_is_marked_with_its_usage():
    usage = {"prompt_tokens": 21, "completion_tokens": 512, "total_tokens": 533}
    answer = await answer_for(httpx2.Response(200, json=completion('{"name": "Ad', finish_reason="length", usage=usage)))
    assert answer.cut_off and answer.text == '{"name": "Ad'
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (21, 512)


@pytest.mark.parametrize("content", [None, ""])
async def test_empty_answer_is_a_row_error(content):
    error = await error_for(httpx2.Response(200, json=completion(content)))
    assert isinstance(error, RowError)
    assert error.kind == "empty_answer"


async def test_answer_without_choices_is_retryable():
    error = await error_for(httpx2.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}))
    assert isinstance(error, RetryableError)
    assert error.kind == "bad_response"


def openai_error(status: int, message: str, headers: dict | None = None) -> httpx2.Response:
    return httpx2.Response(status, json={"error": {"message": message, "type": "error", "code": None}}, headers=headers)


@pytest.mark.parametrize(("status", "kind"), [(401, "authentication"), (403, "authentication"), (404, "not_found")])
async def test_engine_errors(status, kind):
    error = await error_for(openai_error(status, "nope"))
    assert type(error) is EngineError
    assert error.kind == kind
    assert f"HTTP {status}: nope" in str(error)
    assert "engine 'mock'" in str(error)


async def test_429_is_retryable_with_retry_after():
    error = await error_for(openai_error(429, "slow down", {"Retry-After": "7"}))
    assert isinstance(error, RetryableError)
    assert error.kind == "http_429"
    assert error.retry_after == 7.0


async def test_retry_after_ms_wins():
    error = await error_for(openai_error(429, "slow down", {"retry-after-ms": "1500", "Retry-After": "7"}))
    assert error.retry_after == 1.5


async def test_500_is_retryable_and_the_sdk_does_not_retry():
    recorder = Recorder(openai_error(500, "boom"))
    client = make(recorder)
    with pytest.raises(RetryableError) as info:
        await client.complete(request())
    await client.aclose()
    assert info.value.kind == "http_500"
    assert info.value.retry_after is None
    assert len(recorder.requests) == 1


async def test_400_is_a_row_error():
    error = await error_for(openai_error(400, "Invalid schema for response_format 'Person'"))
    assert type(error) is RowError
    assert error.kind == "http_400"
    assert "Invalid schema" in str(error)


async def test_plain_string_error_body():
    error = await error_for(httpx2.Response(401, json={"error": "Unauthorized"}))
    assert "HTTP 401: Unauthorized" in str(error)


async def test_timeout_is_retryable():
    error = await error_for(httpx2.ReadTimeout("timed out"))
    assert type(error) is RetryableError
    assert error.kind == "timeout"
    assert "api.openai.com" in str(error)


async def test_connection_error_is_retryable_and_names_the_url():
    error = await error_for(httpx2.ConnectError("[Errno 111] Connection refused"), endpoint="http://user:secret@10.0.0.1:8000/v1")
    assert type(error) is RetryableError
    assert error.kind == "connection"
    assert "http://10.0.0.1:8000/v1/chat/completions" in str(error)
    assert "Connection refused" in str(error)
    assert "secret" not in str(error)


@pytest.mark.parametrize(
    "response",
    [
        openai_error(401, f"Incorrect API key provided: {KEY}"),
        httpx2.Response(500, text=f"upstream said {KEY}"),
        httpx2.ConnectError(f"cannot reach with {KEY}"),
    ],
)
async def test_the_key_never_appears_in_errors(response):
    error = await error_for(response)
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert KEY not in str(error.raw)


def test_more_than_four_stop_strings_are_refused_for_the_openai_api_before_any_request():
    config = register_engine("gpt", backend="openai", model="gpt-4o-mini", api_key="sk-test", api="chat")
    with pytest.raises(ConfigError, match="at most 4 stop strings; the step gives 5"):
        translate_sampling(config, SamplingParams(stop=["a", "b", "c", "d", "e"]))
    served = register_engine("local", backend="openai", model="m", endpoint="http://127.0.0.1:9/v1", api_key="x")
    assert translate_sampling(served, SamplingParams(stop=["a", "b", "c", "d", "e"]))["stop"] == ["a", "b", "c", "d", "e"], (
        "other servers decide"
    )
    assert "stop" not in translate_sampling(config, SamplingParams(stop=[])), "an empty list is not sent"


async def test_an_answer_saying_the_request_limit_is_spent_holds_the_engine_until_it_resets():
    """Through the SDK, the shared client's hook reads x-ratelimit-* of a successful answer (chainette.http.watch_limits)."""
    from chainette.policy import EngineGate, clock, complete_with_retries

    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "40s"}
    client = make(Recorder(httpx2.Response(200, json=completion(), headers=spent)))
    gate = EngineGate(OpenAIOptions(api="chat"))
    try:
        await complete_with_retries(client, request(), gate)
    finally:
        await client.aclose()
    assert gate.resume_at > clock() + 35
