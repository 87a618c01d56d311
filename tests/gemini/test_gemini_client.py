"""The gemini client against the loopback Gemini stand-in: the body it sends (checked against google-genai's own
request types), usage with implicit-cache reads, thoughts, finish reasons, errors by status, media, keys."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from pydantic import BaseModel
import pytest

from chainette import Chain, Step, register_engine
from chainette.client import Answer, Request
from chainette.errors import EngineError, RetryableError, RowError
from chainette.plugins import translate_sampling
from chainette.sampling import SamplingParams
from chainette.schema import json_schema, schema_name
from chainette.testing import Fault

genai_types = pytest.importorskip("google.genai.types")
from chainette_gemini.client import GeminiClient  # noqa: E402

API_KEY = "gm-test-key-0123456789"


class Label(BaseModel):
    label: str
    score: float


def request_for(model: type[BaseModel] = Label, *, sampling: dict[str, Any] | None = None, content: Any = "Judge: fine") -> Request:
    messages = [{"role": "system", "content": "Answer with JSON."}, {"role": "user", "content": content}]
    return Request(messages, json_schema(model), schema_name(model), sampling or {}, "s", "0", model)


def complete(server, request: Request, **options: Any) -> Answer:
    config = register_engine("g", backend="gemini", model="fake-model", endpoint=server.base_url, api_key=API_KEY, **options)

    async def call() -> Answer:
        client = GeminiClient(config)
        try:
            return await client.complete(request)
        finally:
            await client.aclose()

    return asyncio.run(call())


def failure(server, fault: Fault) -> BaseException:
    server.fail_next(fault)
    with pytest.raises(Exception) as caught:
        complete(server, request_for())
    return caught.value


def test_the_body_follows_the_sdk_request_types(gemini_server):
    config = register_engine("g", backend="gemini", model="fake-model", endpoint=gemini_server.base_url, api_key=API_KEY)
    sampling = translate_sampling(config, SamplingParams(temperature=0.2, top_k=5, max_tokens=64, stop=["END"], seed=3, n=2))
    answer = complete(gemini_server, request_for(sampling=sampling), thinking_budget=128)
    [record] = gemini_server.requests
    body = record["body"]
    assert record["headers"]["x-goog-api-key"] == API_KEY
    generation = genai_types.GenerationConfig.model_validate(body["generationConfig"])  # unknown keys are refused
    assert generation.response_mime_type == "application/json"
    assert generation.response_json_schema["properties"].keys() == {"label", "score"}
    assert (generation.temperature, generation.top_k, generation.max_output_tokens, generation.stop_sequences) == (0.2, 5, 64, ["END"])
    assert (generation.seed, generation.candidate_count, generation.thinking_config.thinking_budget) == (3, 2, 128)
    assert genai_types.Content.model_validate(body["systemInstruction"]).parts[0].text == "Answer with JSON."
    [user] = [genai_types.Content.model_validate(content) for content in body["contents"]]
    assert (user.role, user.parts[0].text) == ("user", "Judge: fine")
    assert len(answer.alternatives) == 1 and Label.model_validate_json(answer.alternatives[0].text)


def test_extra_sampling_keys_reach_the_config_or_the_body(gemini_server):
    complete(gemini_server, request_for(sampling={"response_logprobs": True, "labels_of_mine": {"a": 1}}))
    body = gemini_server.requests[-1]["body"]
    assert body["generationConfig"]["responseLogprobs"] is True
    assert body["labels_of_mine"] == {"a": 1}


def test_cached_and_thinking_tokens_are_counted_by_kind(gemini_server):
    gemini_server.usage = {
        "prompt_token_count": 100,
        "cached_content_token_count": 40,
        "candidates_token_count": 7,
        "thoughts_token_count": 5,
    }
    usage = complete(gemini_server, request_for()).usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (60, 12, 40, 0)


def test_thought_parts_are_the_reasoning_not_the_answer(gemini_server):
    gemini_server.thought = "Weighing the label first."
    answer = complete(gemini_server, request_for(), include_thoughts=True)
    assert answer.reasoning == "Weighing the label first."
    assert Label.model_validate_json(answer.text)
    generation = genai_types.GenerationConfig.model_validate(gemini_server.requests[-1]["body"]["generationConfig"])
    assert generation.thinking_config == genai_types.ThinkingConfig(include_thoughts=True)


def test_max_tokens_is_a_cut_off_answer(gemini_server):
    gemini_server.finish = "MAX_TOKENS"
    assert complete(gemini_server, request_for()).cut_off


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT"])
def test_a_withheld_answer_fails_the_row(gemini_server, reason):
    gemini_server.finish = reason
    with pytest.raises(RowError) as caught:
        complete(gemini_server, request_for())
    assert caught.value.kind == "content_filter" and reason in str(caught.value)
    assert caught.value.usage is not None and caught.value.usage.input_tokens == 11


def test_a_blocked_prompt_fails_the_row(gemini_server):
    gemini_server.block = "PROHIBITED_CONTENT"
    with pytest.raises(RowError, match="blocked the prompt") as caught:
        complete(gemini_server, request_for())
    assert caught.value.kind == "content_filter"


def test_a_rate_limit_waits_for_the_retry_info_delay(gemini_server):
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}],
        }
    }
    error = failure(gemini_server, Fault(status=429, retry_after=2, body=body))
    assert isinstance(error, RetryableError) and error.retry_after == 13
    assert isinstance(failure(gemini_server, Fault(status=429, retry_after=2)), RetryableError)
    assert failure(gemini_server, Fault(status=429, retry_after=2)).retry_after == 2  # no RetryInfo: Retry-After


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, RetryableError), (503, RetryableError), (504, RetryableError), (400, RowError), (404, EngineError), (403, EngineError)],
)
def test_statuses_map_to_the_core_policy(gemini_server, status, kind):
    assert isinstance(failure(gemini_server, Fault(status=status)), kind)
    assert len(gemini_server.chat_requests()) == 1, "the SDK did not retry by itself"


def test_an_invalid_key_stops_the_run_and_is_never_shown(gemini_server):
    gemini_server.api_key = "the-right-key-000"
    with pytest.raises(EngineError) as caught:
        complete(gemini_server, request_for())
    assert caught.value.kind == "authentication"
    assert API_KEY not in str(caught.value)


def test_no_key_stops_before_any_request(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    config = register_engine("g", backend="gemini", model="gemini-2.5-flash")
    with pytest.raises(EngineError, match="GEMINI_API_KEY"):
        GeminiClient(config)


def test_media_go_inline_or_by_url(gemini_server, tmp_path):
    from chainette.media import Image

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    (tmp_path / "dot.png").write_bytes(png)

    class Photo(BaseModel):
        photo: Image

    reference = Photo(photo=str(tmp_path / "dot.png")).photo.reference()
    url = {"media": "image", "media_type": "image/jpeg", "sha256": None, "url": "https://example.com/cat.jpg"}
    content = [
        {"type": "text", "text": "Describe:"},
        {"type": "media", "field": "photo", "reference": reference},
        {"type": "media", "field": "link", "reference": url},
    ]
    complete(gemini_server, request_for(content=content))
    parts = genai_types.Content.model_validate(gemini_server.requests[-1]["body"]["contents"][0]).parts
    assert parts[1].inline_data == genai_types.Blob(mime_type="image/png", data=png)
    assert parts[2].file_data == genai_types.FileData(file_uri="https://example.com/cat.jpg", mime_type="image/jpeg")


def test_a_chain_runs_and_writes_no_key(gemini_server, tmp_path, monkeypatch, every_byte):
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    register_engine("g", backend="gemini", model="fake-model", endpoint=gemini_server.base_url)
    step = Step(id="label", input_model=Label, output_model=Label, engine_name="g", user_prompt="{{label}}")
    result = Chain(name="c", steps=[step]).run([{"label": "a", "score": 1.0}], output_dir=tmp_path / "run", progress=False, cache=False)
    assert result.errors == [] and len(result["label"]) == 1
    assert gemini_server.requests[-1]["headers"]["x-goog-api-key"] == API_KEY
    assert API_KEY.encode() not in every_byte(tmp_path / "run")


def test_the_environment_cannot_turn_the_client_to_vertex_ai(gemini_server, monkeypatch):
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_API_KEY", "another-key-from-the-environment")
    assert Label.model_validate_json(complete(gemini_server, request_for()).text)
    assert gemini_server.requests[-1]["path"] == "/v1beta/models/fake-model:generateContent"
    assert gemini_server.requests[-1]["headers"]["x-goog-api-key"] == API_KEY
