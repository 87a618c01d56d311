"""The anthropic client over real HTTP against the loopback Messages API stand-in (FakeAnthropic, answering with the
SDK's own response types): every request body checked against the SDK's request types (`MessageCreateParams`), the
schema the SDK itself makes, forced tool use, prompt caching and its usage, thinking, media blocks, errors by status,
stop reasons, and the key never in an error."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, TypeAdapter
import pytest

anthropic = pytest.importorskip("anthropic")

from anthropic.types import Message, TextBlock, ThinkingBlock, Usage  # noqa: E402
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming  # noqa: E402

from chainette import Document, Image, Step, register_engine  # noqa: E402
from chainette.client import Answer, Request  # noqa: E402
from chainette.errors import EngineError, RetryableError, RowError  # noqa: E402
from chainette.policy import OVERLOAD_KINDS  # noqa: E402
from chainette.testing import Fault  # noqa: E402
from chainette.testing.conformance.harness import Text, Verdict, request  # noqa: E402
from chainette_anthropic.client import AnthropicClient  # noqa: E402
from chainette_anthropic.testing import FakeAnthropic  # noqa: E402
from chainette_anthropic.wire import parse_message  # noqa: E402

KEY = "sk-ant-CLIENT-5d6e7f"
MODELS = ("fake-model", "claude-haiku-4-5")
LONG = "Rules of the task. " * 300  # 5,700 characters: about 1,400 tokens
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)


@pytest.fixture
def server():
    with FakeAnthropic(api_key=KEY, models=MODELS) as fake:
        yield fake


def checked(body: dict[str, Any]) -> dict[str, Any]:
    """`body`, after checking it against the SDK's request type: its keys known, its values of their types."""
    assert set(body) <= MessageCreateParamsNonStreaming.__annotations__.keys(), (
        set(body) - MessageCreateParamsNonStreaming.__annotations__.keys()
    )
    PARAMS.validate_python(body)
    return body


async def ask(server: FakeAnthropic, req: Request, model: str = "fake-model", **options: Any) -> Answer:
    config = register_engine("claude", backend="anthropic", model=model, endpoint=server.base_url, api_key=KEY, **options)
    client = AnthropicClient(config)
    try:
        return await client.complete(req)
    finally:
        await client.aclose()


def with_system(req: Request, system: str) -> Request:
    req.messages = [{"role": "system", "content": system}, *req.messages[1:]]
    return req


async def test_json_outputs_carry_the_schema_the_sdk_itself_makes(server):
    answer = await ask(server, request(Verdict, "judge this"))
    Verdict.model_validate_json(answer.text)
    body = checked(server.chat_requests()[0])
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": anthropic.transform_schema(Verdict)}}
    assert body["system"] == [{"type": "text", "text": "Answer with JSON."}], "a short system prompt is not marked for the cache"
    assert body["messages"] == [{"role": "user", "content": "judge this"}]
    assert body["max_tokens"] == 4096 and "thinking" not in body and "tools" not in body


async def test_a_forced_tool_carries_the_plain_schema_and_its_input_is_the_answer(server):
    req = request(Verdict, "judge this")
    answer = await ask(server, req, structured_output="tool")
    Verdict.model_validate_json(answer.text)
    body = checked(server.chat_requests()[0])
    assert body["tools"] == [{"name": "Verdict", "description": "Give the answer.", "input_schema": req.schema}]
    assert body["tool_choice"] == {"type": "tool", "name": "Verdict"}
    assert "output_config" not in body


async def asked(server: FakeAnthropic, requests: list[Request], model: str = "fake-model", **options: Any) -> list[Answer]:
    """The answers of one client to `requests`, sent one after the other."""
    config = register_engine("claude", backend="anthropic", model=model, endpoint=server.base_url, api_key=KEY, **options)
    client = AnthropicClient(config)
    try:
        return [await client.complete(req) for req in requests]
    finally:
        await client.aclose()


async def test_a_repeated_long_system_prompt_is_cached_and_reads_and_writes_are_counted_apart(server):
    """The first request with a system prompt does not mark it (it may never come again); the second marks it and
    writes it to the cache, the next ones read it."""
    first, second, third = await asked(server, [with_system(request(Text, word), LONG) for word in ("one", "two", "three")])
    bodies = [checked(body) for body in server.chat_requests()]
    assert bodies[0]["system"] == [{"type": "text", "text": LONG}]
    assert bodies[1]["system"] == bodies[2]["system"] == [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    assert first.usage.cache_write_tokens == first.usage.cache_read_tokens == 0
    assert second.usage.cache_write_tokens > 0 and second.usage.cache_read_tokens == 0
    assert third.usage.cache_read_tokens == second.usage.cache_write_tokens and third.usage.cache_write_tokens == 0
    assert (third.usage.input_tokens, third.usage.output_tokens) == (11, 7), "input_tokens stays the uncached input"


async def test_a_system_prompt_that_differs_on_every_row_is_never_marked(server):
    """It would only be written to the cache, at 1.25 times the input price, and never read."""
    await asked(server, [with_system(request(Text, "row"), f"Row {index}. {LONG}") for index in range(3)])
    assert all("cache_control" not in checked(body)["system"][0] for body in server.chat_requests())


@pytest.mark.parametrize(("model", "options"), [("fake-model", {"prompt_cache": False}), ("claude-haiku-4-5", {})])
async def test_no_cache_mark_when_turned_off_or_below_the_model_s_minimum(server, model, options):
    """Haiku 4.5 caches prefixes of 4,096 tokens or more: about 1,400 tokens of system prompt would only be processed."""
    answers = await asked(server, [with_system(request(Text, word), LONG) for word in ("one", "two")], model=model, **options)
    assert all("cache_control" not in checked(body)["system"][0] for body in server.chat_requests())
    assert answers[1].usage.cache_write_tokens == 0


async def test_thinking_is_asked_with_its_budget_and_kept_as_the_reasoning(server):
    server.reasoning = "first the label, then the score"
    answer = await ask(server, request(Verdict, "judge this"), thinking_budget=2048)
    assert checked(server.chat_requests()[0])["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert answer.reasoning == "first the label, then the score"
    Verdict.model_validate_json(answer.text)


async def test_an_answer_stopped_at_the_token_limit_is_marked_cut_off(server):
    req = request(Text, "short")
    req.sampling = {"max_tokens": 3}
    answer = await ask(server, req)
    assert answer.cut_off and answer.usage.output_tokens == 3


class Claim(BaseModel):
    photo: Image
    scan: Document


async def test_images_and_pdfs_go_as_blocks_of_bytes_or_urls(server, tmp_path, monkeypatch):
    from chainette.execution.prompts import Prompts
    from chainette.frontier import Row

    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))
    (tmp_path / "claim.pdf").write_bytes(PDF)
    step = Step(id="read", input_model=Claim, output_model=Text, engine_name="claude", user_prompt="Photo {{photo}} scan {{scan}}")
    for photo in (PNG, "https://example.org/r.jpg"):
        data = Claim.model_validate({"photo": photo, "scan": str(tmp_path / "claim.pdf")}).model_dump(mode="json")
        messages = Prompts.of(step).messages(Row("0", {"chain_input": data}, "chain_input"))
        await ask(server, Request(messages, Text.model_json_schema(), "Text", output_model=Text))
    sent = [checked(body)["messages"][-1]["content"] for body in server.chat_requests()]
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(PDF).decode()}}
    png = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    assert sent[0] == [{"type": "text", "text": "Photo "}, {"type": "image", "source": png}, {"type": "text", "text": " scan "}, pdf]
    assert sent[1][1] == {"type": "image", "source": {"type": "url", "url": "https://example.org/r.jpg"}}


def error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(
    ("fault", "raised", "kind"),
    [
        (Fault(status=429, retry_after=3, body=error("rate_limit_error", "slow down")), RetryableError, "http_429"),
        (Fault(status=529, body=error("overloaded_error", "Overloaded")), RetryableError, "http_529"),
        (Fault(status=500, body=error("api_error", "oops")), RetryableError, "http_500"),
        (Fault(status=400, body=error("invalid_request_error", "bad field")), RowError, "http_400"),
        (Fault(status=413, body=error("request_too_large", "too large")), RowError, "http_413"),
        (Fault(status=401, body=error("authentication_error", "invalid key")), EngineError, "authentication"),
        (Fault(status=403, body=error("permission_error", "no access")), EngineError, "authentication"),
        (Fault(status=400, body=error("invalid_request_error", "Your credit balance is too low to access the API")), EngineError, "quota"),
        (Fault(status=402, body=error("billing_error", "payment required")), EngineError, "quota"),
    ],
)
async def test_errors_by_status_follow_the_shared_rules(server, fault, raised, kind):
    server.fail_next(fault)
    with pytest.raises(raised) as info:
        await ask(server, request(Text, "fail"))
    assert type(info.value) is raised and info.value.kind == kind
    if fault.status == 429:
        assert info.value.retry_after == 3
    if fault.status == 529:
        assert kind in OVERLOAD_KINDS, "an overload answer narrows an adaptive window"
    assert len(server.chat_requests()) == 1, "the SDK does not retry by itself"


async def test_the_key_quoted_by_the_server_never_reaches_the_error(server):
    server.fail_next(Fault(status=400, body=error("invalid_request_error", f"key {KEY} is malformed")))
    with pytest.raises(RowError) as info:
        await ask(server, request(Text, "fail"))
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_no_key_stops_the_engine_naming_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(EngineError, match="ANTHROPIC_API_KEY"):
        AnthropicClient(register_engine("claude", backend="anthropic", model="claude-haiku-4-5"))


def message(*content: Any, stop: str) -> dict[str, Any]:
    return Message(
        id="msg_1",
        type="message",
        role="assistant",
        model="m",
        content=list(content),
        stop_reason=stop,
        usage=Usage(input_tokens=5, output_tokens=2),
    ).model_dump(mode="json")


def test_a_refusal_fails_the_row():
    with pytest.raises(RowError) as info:
        parse_message(message(TextBlock(type="text", text="I can't help with that."), stop="refusal"), engine="claude")
    assert info.value.kind == "refusal" and info.value.usage.input_tokens == 5


def test_a_token_limit_spent_on_thinking_is_an_empty_cut_off_answer():
    answer = parse_message(message(ThinkingBlock(type="thinking", thinking="hmm", signature="s"), stop="max_tokens"), engine="claude")
    assert (answer.text, answer.reasoning, answer.cut_off) == ("", "hmm", True)


def test_an_empty_answer_fails_the_row_and_a_body_without_content_is_retried():
    with pytest.raises(RowError, match="empty"):
        parse_message(message(stop="end_turn"), engine="claude")
    with pytest.raises(RetryableError, match="not a message"):
        parse_message({"type": "message"}, engine="claude")


def test_a_chain_counts_cache_reads_and_writes_apart_and_prices_each(server, tmp_path):
    """Rows sharing a long system prompt: the second writes it to the cache, the next ones read it; run.json counts
    each kind apart and the cost prices each at its own rate."""
    from chainette import Chain

    prices = {"price_per_million_input": 1.0, "price_per_million_output": 5.0}
    register_engine(
        "claude",
        backend="anthropic",
        model="fake-model",
        endpoint=server.base_url,
        api_key=KEY,
        max_concurrency=1,
        **prices,
        price_per_million_cache_read=0.1,
        price_per_million_cache_write=1.25,
    )
    step = Step(id="label", input_model=Text, output_model=Text, engine_name="claude", system_prompt=LONG, user_prompt="{{text}}")
    result = Chain(name="cached", steps=[step]).run([{"text": f"row {i}"} for i in range(4)], output_dir=tmp_path / "out", cache=False)
    figures = result.stats["steps"]["label"]
    written = figures["cache_write_tokens"]
    assert written > 1000 and figures["cache_read_tokens"] == 2 * written
    assert (figures["input_tokens"], figures["output_tokens"]) == (4 * 11, 4 * 7)
    expected = (4 * 11 * 1.0 + 4 * 7 * 5.0 + 2 * written * 0.1 + written * 1.25) / 1_000_000
    assert figures["cost_usd"] == round(expected, 6), "each kind at its price (the cost is rounded to a millionth)"
