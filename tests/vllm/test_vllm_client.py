"""The vLLM client against a mocked transport: payload on the wire, answer parsing, error classification."""

from __future__ import annotations

import json
import socket

import httpx2
import pytest

from chainette import register_engine
from chainette.client import Answer, Request
from chainette.errors import ConfigError, EngineError, RetryableError, RowError
from chainette.testing import FakeServer, Fault
from chainette_vllm.client import VllmClient

SCHEMA = {"type": "object", "properties": {"value": {"type": "string"}}, "required": ["value"], "title": "Tagged"}
SECRET = "sk-very-secret-key"


def make_request(**sampling) -> Request:
    return Request([{"role": "user", "content": "hi"}], SCHEMA, "Tagged", sampling, "step", "0")


def completion(message: dict | None = None, finish_reason: str = "stop", usage: dict | None = None) -> dict:
    message = message or {"role": "assistant", "content": '{"value": "x"}'}
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    if usage is not None:
        body["usage"] = usage
    return body


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed status, body and headers."""

    def __init__(self, body: dict | None = None, status: int = 200, headers: dict | None = None):
        self.body = completion(usage={"prompt_tokens": 5, "completion_tokens": 3}) if body is None else body
        self.status = status
        self.headers = headers or {}
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return httpx2.Response(self.status, json=self.body, headers=self.headers)

    def client(self, **engine) -> VllmClient:
        settings = {"endpoint": "http://vllm.test/v1", **engine}
        return VllmClient(register_engine("v", backend="vllm", model="my-model", **settings), transport=httpx2.MockTransport(self))

    async def ask(self, **engine) -> Answer:
        client = self.client(**engine)
        try:
            return await client.complete(make_request())
        finally:
            await client.aclose()

    @property
    def sent(self) -> dict:
        return json.loads(self.requests[-1].content)


async def test_payload_shape_on_the_wire():
    handler = Recorder()
    client = handler.client()
    await client.complete(make_request(temperature=0.1, top_k=20, max_tokens=50))
    await client.aclose()
    request = handler.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "http://vllm.test/v1/chat/completions"
    assert handler.sent == {
        "model": "my-model",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "Tagged", "schema": SCHEMA}},
        "temperature": 0.1,
        "top_k": 20,
        "max_tokens": 50,
    }
    assert "authorization" not in request.headers


async def test_engine_fields_are_sent_when_set_and_sampling_extra_overrides_them():
    handler = Recorder()
    client = handler.client(chat_template_kwargs={"enable_thinking": False}, include_reasoning=False)
    await client.complete(make_request())
    assert handler.sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert handler.sent["include_reasoning"] is False
    await client.complete(make_request(chat_template_kwargs={"enable_thinking": True}))
    assert handler.sent["chat_template_kwargs"] == {"enable_thinking": True}
    await client.aclose()


async def test_no_guided_fields_are_ever_sent():
    handler = Recorder()
    client = handler.client(chat_template_kwargs={"x": 1}, include_reasoning=True)
    await client.complete(make_request(temperature=0.0, seed=1, stop=["}"]))
    await client.aclose()
    assert not [key for key in handler.sent if key.startswith("guided_")]
    assert handler.sent["response_format"]["type"] == "json_schema"


async def test_served_model_name_is_the_model_requests_name():
    handler = Recorder()
    await handler.ask(served_model_name="short-name")
    assert handler.sent["model"] == "short-name"


def test_client_needs_the_server_url():
    with pytest.raises(ConfigError, match="needs the server's URL"):
        VllmClient(register_engine("v", backend="vllm", model="m"))


@pytest.mark.parametrize(
    ("engine", "env", "expected"),
    [
        ({"api_key": SECRET}, {}, f"Bearer {SECRET}"),
        ({}, {"VLLM_API_KEY": SECRET}, f"Bearer {SECRET}"),
        ({"api_key_env": "MY_VLLM_KEY"}, {"MY_VLLM_KEY": SECRET, "VLLM_API_KEY": "other"}, f"Bearer {SECRET}"),
        ({}, {}, None),
    ],
)
async def test_api_key_sources(monkeypatch, engine, env, expected):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    handler = Recorder()
    client = handler.client(**engine)
    await client.complete(make_request())
    await client.aclose()
    assert handler.requests[0].headers.get("authorization") == expected


async def test_answer_text_usage_and_reasoning():
    message = {"role": "assistant", "content": '{"value": "a"}', "reasoning": "because"}
    handler = Recorder(completion(message, usage={"prompt_tokens": 12, "completion_tokens": 4}))
    answer = await handler.ask()
    assert answer.text == '{"value": "a"}'
    assert answer.reasoning == "because"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (12, 4)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"content": "{}", "reasoning_content": "older servers"}, "older servers"),
        ({"content": "{}", "reasoning": None, "reasoning_content": "older servers"}, "older servers"),
        ({"content": "{}", "reasoning": "new", "reasoning_content": "old"}, "new"),
        ({"content": "{}", "reasoning": None}, None),
        ({"content": "{}"}, None),
    ],
)
async def test_reasoning_falls_back_to_reasoning_content(message, expected):
    answer = await Recorder(completion(message)).ask()
    assert answer.reasoning == expected


async def test_absent_usage_counts_zero():
    answer = await Recorder(completion()).ask()
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (0, 0)


async def test_an_answer_cut_off_at_max_tokens_is_marked_with_its_usage():
    usage = {"prompt_tokens": 12, "completion_tokens": 256}
    answer = await Recorder(completion({"content": '{"value": "cut'}, finish_reason="length", usage=usage)).ask()
    assert answer.cut_off and answer.text == '{"value": "cut'
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (12, 256)


@pytest.mark.parametrize("body", [completion({"role": "assistant", "content": None}), completion({"role": "assistant"})])
async def test_missing_content_is_an_empty_answer(body):
    with pytest.raises(RowError) as info:
        await Recorder(body).ask()
    assert info.value.kind == "empty_answer"
    assert not isinstance(info.value, RetryableError)


@pytest.mark.parametrize("body", [{"choices": []}, {"choices": [{"index": 0, "message": None}]}, {"object": "chat.completion"}])
async def test_answer_without_a_message_is_a_retryable_bad_response(body):
    with pytest.raises(RetryableError) as info:
        await Recorder(body).ask()
    assert info.value.kind == "bad_response"


@pytest.mark.parametrize(
    ("status", "body", "error_type", "kind"),
    [
        (401, {"error": "Unauthorized"}, EngineError, "authentication"),
        (403, {"error": {"message": "forbidden", "type": "PermissionDenied"}}, EngineError, "authentication"),
        (404, {"error": {"message": "The model `my-model` does not exist.", "code": 404}}, EngineError, "not_found"),
        (500, {"error": {"message": "boom", "type": "InternalServerError"}}, RetryableError, "http_500"),
        (503, {"error": {"message": "overloaded"}}, RetryableError, "http_503"),
        (400, {"error": {"message": "unsupported JSON schema", "type": "BadRequestError"}}, RowError, "http_400"),
    ],
)
async def test_http_errors_are_classified(status, body, error_type, kind):
    handler = Recorder(body, status=status)
    with pytest.raises(error_type) as info:
        await handler.ask(api_key=SECRET)
    assert info.value.kind == kind
    assert f"HTTP {status}" in str(info.value)
    assert SECRET not in str(info.value)
    if error_type is RowError:
        assert not isinstance(info.value, (RetryableError, EngineError))


async def test_vllm_unauthorized_body_is_reported():
    with pytest.raises(EngineError, match="HTTP 401: Unauthorized"):
        await Recorder({"error": "Unauthorized"}, status=401).ask()


async def test_429_carries_retry_after():
    handler = Recorder({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "3"})
    with pytest.raises(RetryableError) as info:
        await handler.ask()
    assert info.value.kind == "http_429"
    assert info.value.retry_after == 3.0


async def test_connection_refused_is_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = VllmClient(register_engine("v", backend="vllm", model="m", endpoint=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(RetryableError) as info:
        await client.complete(make_request())
    await client.aclose()
    assert info.value.kind == "connection"


async def test_timeout_is_retryable():
    with FakeServer() as server:
        server.fail_next(Fault(hang=1.0))
        config = register_engine("v", backend="vllm", model="fake-model", endpoint=f"{server.base_url}/v1", timeout=0.2)
        client = VllmClient(config)
        with pytest.raises(RetryableError) as info:
            await client.complete(make_request())
        await client.aclose()
    assert info.value.kind == "timeout"
