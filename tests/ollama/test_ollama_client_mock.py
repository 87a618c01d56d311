"""The Ollama client against httpx2.MockTransport: the body on the wire, answer parsing, error classification."""

from __future__ import annotations

import json

import httpx2
import pytest

from chainette import SamplingParams, register_engine
from chainette.client import Request
from chainette.errors import EngineError, RetryableError, RowError
from chainette.plugins import get_plugins
from chainette_ollama.client import OllamaClient, parse_answer

ENDPOINT = "http://ollama.test:11434"
SCHEMA = {"title": "Out", "type": "object", "properties": {"value": {"type": "string"}}, "required": ["value"]}
MESSAGES = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "hello"}]
REPLY = {
    "model": "llama3.2",
    "message": {"role": "assistant", "content": '{"value": "hi"}'},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 21,
    "eval_count": 9,
}


def make_request(sampling=None):
    return Request(messages=MESSAGES, schema=SCHEMA, schema_name="Out", sampling=sampling or {}, step_id="s", row_id="0")


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed status, body and headers."""

    def __init__(self, status=200, body=None, headers=None):
        self.status, self.body, self.headers = status, REPLY if body is None else body, headers or {}
        self.seen: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        return httpx2.Response(self.status, json=self.body, headers=self.headers)

    def json(self, index=0):
        return json.loads(self.seen[index].content)


def make_client(handler, **engine):
    engine.setdefault("model", "llama3.2")
    config = register_engine("local", backend="ollama", endpoint=ENDPOINT, **engine)
    return OllamaClient(config, transport=httpx2.MockTransport(handler))


async def ask(handler, request=None, **engine):
    client = make_client(handler, **engine)
    try:
        return await client.complete(request or make_request())
    finally:
        await client.aclose()


async def test_minimal_body_on_the_wire():
    recorder = Recorder()
    await ask(recorder)
    sent = recorder.seen[0]
    assert (sent.method, str(sent.url)) == ("POST", f"{ENDPOINT}/api/chat")
    assert recorder.json() == {"model": "llama3.2", "messages": MESSAGES, "stream": False, "format": SCHEMA}
    assert "authorization" not in sent.headers


async def test_full_body_with_options_think_and_keep_alive():
    recorder = Recorder()
    config = register_engine("tmp", backend="ollama", model="m")
    options = get_plugins().call(
        "ollama", "translate_sampling", config=config, sampling=SamplingParams(temperature=0, max_tokens=64, repetition_penalty=1.2)
    )
    await ask(recorder, make_request(options), think="high", keep_alive="10m")
    assert recorder.json() == {
        "model": "llama3.2",
        "messages": MESSAGES,
        "stream": False,
        "format": SCHEMA,
        "options": {"temperature": 0.0, "num_predict": 64, "repeat_penalty": 1.2},
        "think": "high",
        "keep_alive": "10m",
    }


async def test_false_and_zero_are_sent_not_dropped():
    recorder = Recorder()
    await ask(recorder, think=False, keep_alive=0)
    body = recorder.json()
    assert body["think"] is False
    assert body["keep_alive"] == 0


async def test_api_key_goes_in_a_bearer_header():
    recorder = Recorder()
    await ask(recorder, api_key="sk-proxy")
    assert recorder.seen[0].headers["authorization"] == "Bearer sk-proxy"


async def test_api_key_env_is_read_and_there_is_no_default_env(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "not-used")
    monkeypatch.setenv("MY_PROXY_KEY", "from-env")
    recorder = Recorder()
    await ask(recorder)
    await ask(recorder, api_key_env="MY_PROXY_KEY")
    assert "authorization" not in recorder.seen[0].headers
    assert recorder.seen[1].headers["authorization"] == "Bearer from-env"


async def test_answer_text_reasoning_and_usage():
    body = {**REPLY, "message": {"role": "assistant", "content": '{"value": "x"}', "thinking": "Let me think."}}
    answer = await ask(Recorder(body=body))
    assert answer.text == '{"value": "x"}'
    assert answer.reasoning == "Let me think."
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (21, 9)


def test_absent_counts_and_empty_thinking_give_zero_and_none():
    body = {"message": {"role": "assistant", "content": "{}", "thinking": ""}, "done": True, "done_reason": "stop"}
    answer = parse_answer(body, engine="local")
    assert answer.reasoning is None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (0, 0)


def test_an_answer_cut_off_at_the_token_limit_is_marked_with_its_usage():
    answer = parse_answer({**REPLY, "done_reason": "length", "message": {"content": '{"value": "cut'}}, engine="local")
    assert answer.cut_off and answer.text == '{"value": "cut'
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (21, 9)


@pytest.mark.parametrize("body", [{"done": True}, {"message": "oops"}, {"message": {"role": "assistant"}}])
def test_reply_without_content_is_a_bad_response(body):
    with pytest.raises(RowError) as caught:
        parse_answer(body, engine="local")
    assert caught.value.kind == "bad_response"


async def test_missing_model_says_to_pull_it():
    recorder = Recorder(404, {"error": "model 'qwen3:4b' not found"})
    with pytest.raises(EngineError) as caught:
        await ask(recorder, model="qwen3:4b")
    assert caught.value.kind == "not_found"
    assert "model 'qwen3:4b' not found" in str(caught.value)
    assert "ollama pull qwen3:4b" in str(caught.value)


async def test_401_is_an_engine_error_that_does_not_show_the_key():
    with pytest.raises(EngineError) as caught:
        await ask(Recorder(401, {"error": "unauthorized"}), api_key="sk-secret-123")
    assert caught.value.kind == "authentication"
    assert "sk-secret-123" not in str(caught.value)
    assert "ollama pull" not in str(caught.value)


async def test_429_is_retryable_with_retry_after():
    with pytest.raises(RetryableError) as caught:
        await ask(Recorder(429, {"error": "busy"}, {"Retry-After": "7"}))
    assert caught.value.kind == "http_429"
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(status):
    with pytest.raises(RetryableError) as caught:
        await ask(Recorder(status, {"error": "server busy, please try again"}))
    assert caught.value.kind == f"http_{status}"


async def test_400_fails_the_row_with_the_server_message():
    with pytest.raises(RowError) as caught:
        await ask(Recorder(400, {"error": '"llama3.2" does not support thinking'}), think=True)
    assert not isinstance(caught.value, RetryableError)
    assert caught.value.kind == "http_400"
    assert "does not support thinking" in str(caught.value)


async def test_connect_error_and_timeout_from_the_transport_are_retryable():
    def refuse(request):
        raise httpx2.ConnectError("refused", request=request)

    def stall(request):
        raise httpx2.ReadTimeout("slow", request=request)

    for handler, kind in ((refuse, "connection"), (stall, "timeout")):
        with pytest.raises(RetryableError) as caught:
            await ask(handler)
        assert caught.value.kind == kind


async def test_make_client_hook_uses_the_resolved_endpoint():
    config = register_engine("local", backend="ollama", model="llama3.2")
    client = get_plugins().call("ollama", "make_client", config=config.model_copy(update={"endpoint": "http://10.0.0.5:11434/"}))
    try:
        assert isinstance(client, OllamaClient)
        assert client.http.base_url == "http://10.0.0.5:11434"
    finally:
        await client.aclose()


def test_think_takes_max_too():
    config = register_engine("local", backend="ollama", model="m", think="max")
    assert config.options.think == "max"
