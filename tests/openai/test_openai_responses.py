"""The openai client's Responses API path (the default on the OpenAI API) against a mocked transport: the request
on the wire, against the fields of OpenAI's `CreateResponse`, and the answer read from a Response."""

from __future__ import annotations

import json
from typing import Any

import httpx2
from pydantic import BaseModel
import pytest

from chainette import Chain, SamplingParams, Step, register_engine
from chainette.client import Request
from chainette.engines import EngineConfig
from chainette.errors import RetryableError, RowError
from chainette.testing import FakeServer
from chainette_openai import OpenAIOptions
from chainette_openai.client import OpenAIClient
from chainette_openai.strict import strict_schema

KEY = "sk-test-RESPONSES-0123456789"
# The request fields of OpenAI's CreateResponse (openapi spec 2.3.0) this backend may send.
CREATE_RESPONSE_FIELDS = {"model", "input", "text", "store", "temperature", "top_p", "max_output_tokens", "reasoning"}


class Person(BaseModel):
    name: str
    age: int | None = None


def response(*output: dict[str, Any], status: str = "completed", usage: dict | None = None, **fields: Any) -> dict[str, Any]:
    body = {"id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-test", "status": status, "output": list(output), **fields}
    if usage is not None:
        body["usage"] = usage
    return body


def message(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": list(content)}


def text(value: str) -> dict[str, Any]:
    return {"type": "output_text", "text": value, "annotations": []}


USAGE = {"input_tokens": 21, "output_tokens": 9, "total_tokens": 30}


async def complete(answer: httpx2.Response, sampling: dict | None = None, **options: Any) -> tuple[Any, list[httpx2.Request]]:
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return answer

    config = EngineConfig(name="mock", backend="openai", model="gpt-test", api_key=KEY, options=OpenAIOptions(**options))
    client = OpenAIClient(config, transport=httpx2.MockTransport(handler))
    request = Request([{"role": "user", "content": "hi"}], Person.model_json_schema(), "Person", sampling or {}, output_model=Person)
    try:
        return await client.complete(request), sent
    except Exception as exc:
        return exc, sent
    finally:
        await client.aclose()


async def test_payload_on_the_wire():
    sampling = {"temperature": 0, "max_output_tokens": 50, "reasoning": {"effort": "low"}}
    answer, sent = await complete(httpx2.Response(200, json=response(message(text('{"name": "Ada", "age": null}')))), sampling)
    assert str(sent[0].url) == "https://api.openai.com/v1/responses"
    body = json.loads(sent[0].content)
    assert set(body) <= CREATE_RESPONSE_FIELDS
    assert body["input"] == [{"role": "user", "content": "hi"}]
    assert body["store"] is False
    assert body["text"] == {"format": {"type": "json_schema", "name": "Person", "schema": strict_schema(Person), "strict": True}}
    assert (body["temperature"], body["max_output_tokens"], body["reasoning"]) == (0, 50, {"effort": "low"})
    assert answer.text == '{"name": "Ada", "age": null}'


async def test_text_usage_and_reasoning_summaries():
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "first"}, {"type": "summary_text", "text": "then"}],
    }
    answer, _ = await complete(httpx2.Response(200, json=response(reasoning, message(text('{"name": '), text('"Ada"}')), usage=USAGE)))
    assert answer.text == '{"name": "Ada"}'
    assert answer.reasoning == "first\n\nthen"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (21, 9)


async def test_a_refusal_is_a_row_error_with_the_usage():
    refusal = {"type": "refusal", "refusal": "I can't help with that."}
    error, _ = await complete(httpx2.Response(200, json=response(message(refusal), usage=USAGE)))
    assert isinstance(error, RowError) and error.kind == "refusal"
    assert error.usage is not None and error.usage.output_tokens == 9


async def test_an_answer_stopped_at_max_output_tokens_is_cut_off():
    body = response(message(text('{"name": "Ad')), status="incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE)
    answer, _ = await complete(httpx2.Response(200, json=body))
    assert answer.cut_off and answer.text == '{"name": "Ad'


async def test_a_reasoning_model_out_of_tokens_before_answering_is_cut_off_empty():
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": []}
    body = response(reasoning, status="incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE)
    answer, _ = await complete(httpx2.Response(200, json=body))
    assert answer.cut_off and answer.text == ""


async def test_the_content_filter_is_a_row_error():
    body = response(message(text("{")), status="incomplete", incomplete_details={"reason": "content_filter"})
    error, _ = await complete(httpx2.Response(200, json=body))
    assert isinstance(error, RowError) and error.kind == "content_filter"


@pytest.mark.parametrize(
    "body",
    [response(status="failed", error={"code": "server_error", "message": "The model failed"}), response(), {"unexpected": True}],
)
async def test_a_failed_or_empty_response_is_retryable(body):
    error, _ = await complete(httpx2.Response(200, json=body))
    assert isinstance(error, RetryableError) and error.kind == "bad_response"


async def test_an_empty_message_is_a_row_error():
    error, _ = await complete(httpx2.Response(200, json=response(message(text("")))))
    assert isinstance(error, RowError) and error.kind == "empty_answer"


async def test_the_prompt_mode_sends_no_text_format():
    _, sent = await complete(httpx2.Response(200, json=response(message(text('{"name": "Ada"}')))), structured_output="prompt")
    assert "text" not in json.loads(sent[0].content)


def test_a_chat_completions_format_is_refused_on_the_responses_api():
    with pytest.raises(ValueError, match="use api='chat'"):
        OpenAIOptions(api="responses", structured_output="json_object")


def test_n_samples_are_asked_as_n_requests_on_the_responses_api(tmp_path):
    """The Responses API has no `n`: a step's n=3 becomes three requests per row, each row keeping its three samples."""
    with FakeServer(api_key=KEY) as server:
        register_engine("gpt", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, api="responses")
        sampling = SamplingParams(n=3, temperature=1)
        step = Step(id="person", output_model=Person, engine_name="gpt", user_prompt="{{ text }}", sampling=sampling)
        result = Chain(name="samples", steps=[step]).run([{"text": "a"}, {"text": "b"}], output_dir=tmp_path / "run", cache=False)
    assert len(result["person"]) == 6
    assert len(server.chat_requests()) == 6 and all("n" not in body for body in server.chat_requests())
