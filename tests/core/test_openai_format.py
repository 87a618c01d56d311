"""The shared reader of OpenAI chat-completion bodies, used by the openai and vllm backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chainette.errors import EngineError, RetryableError, RowError
from chainette.openai_format import parse_chat_completion, parse_usage

USAGE = {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}


def body(content: Any = '{"a": 1}', *, finish_reason: str | None = "stop", usage: Any = USAGE, **message: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish_reason}
    return {"object": "chat.completion", "choices": [choice], "usage": usage}


def row_error(answer: Any) -> RowError:
    with pytest.raises(RowError) as info:
        parse_chat_completion(answer, engine="e")
    assert not isinstance(info.value, (RetryableError, EngineError))
    return info.value


def test_content_and_usage():
    answer = parse_chat_completion(body(), engine="e")
    assert answer.text == '{"a": 1}'
    assert answer.reasoning is None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (12, 34)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"reasoning": "because"}, "because"),
        ({"reasoning_content": "older servers"}, "older servers"),
        ({"reasoning": None, "reasoning_content": "older servers"}, "older servers"),
        ({"reasoning": "new", "reasoning_content": "old"}, "new"),
        ({"reasoning": ""}, None),
        ({"reasoning": 3}, None),
    ],
)
def test_reasoning(message, expected):
    assert parse_chat_completion(body(**message), engine="e").reasoning == expected


def test_refusal_is_a_row_error_with_the_usage():
    error = row_error(body(None, refusal="I can't help with that."))
    assert error.kind == "refusal"
    assert error.raw == "I can't help with that."
    assert "refused: I can't help with that." in str(error)
    assert (error.usage.input_tokens, error.usage.output_tokens) == (12, 34)


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": [], "usage": USAGE},
        {"choices": [{"index": 0, "message": None}], "usage": USAGE},
        {"choices": "none", "usage": USAGE},
        {"object": "chat.completion", "usage": USAGE},
    ],
)
def test_no_choices_is_retryable_with_the_usage(answer):
    with pytest.raises(RetryableError) as info:
        parse_chat_completion(answer, engine="e")
    assert info.value.kind == "bad_response"
    assert "engine 'e'" in str(info.value)
    assert json.loads(info.value.raw or "") == answer
    assert (info.value.usage.input_tokens, info.value.usage.output_tokens) == (12, 34)


@pytest.mark.parametrize("answer", [None, [1, 2], "hello"])
def test_a_body_that_is_not_an_object_is_retryable(answer):
    with pytest.raises(RetryableError) as info:
        parse_chat_completion(answer, engine="e")
    assert info.value.kind == "bad_response"
    assert (info.value.usage.input_tokens, info.value.usage.output_tokens) == (0, 0)


def test_the_content_filter_is_a_row_error_with_the_text_and_usage():
    error = row_error(body('{"a": "cut', finish_reason="content_filter"))
    assert error.kind == "content_filter"
    assert error.raw == '{"a": "cut'
    assert (error.usage.input_tokens, error.usage.output_tokens) == (12, 34)


def test_an_answer_cut_off_at_the_token_limit_is_marked_for_the_step_to_judge():
    answer = parse_chat_completion(body('{"a": "complete"}', finish_reason="length"), engine="e")
    assert answer.cut_off and answer.text == '{"a": "complete"}', "a complete answer may end exactly at max_tokens"
    assert not parse_chat_completion(body('{"a": 1}'), engine="e").cut_off


def test_cut_off_without_content_is_an_empty_answer():
    assert row_error(body(None, finish_reason="length")).kind == "empty_answer"


@pytest.mark.parametrize("content", [None, "", 5])
def test_empty_content_is_a_row_error_with_the_usage(content):
    error = row_error(body(content))
    assert error.kind == "empty_answer"
    assert (error.usage.input_tokens, error.usage.output_tokens) == (12, 34)


def test_missing_content_key_is_an_empty_answer():
    answer = body()
    del answer["choices"][0]["message"]["content"]
    assert row_error(answer).kind == "empty_answer"


@pytest.mark.parametrize("usage", [None, "u", {}, {"prompt_tokens": None}])
def test_missing_or_malformed_usage_counts_zero(usage):
    answer = parse_chat_completion(body(usage=usage), engine="e")
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (0, 0)
    assert parse_usage(usage) == answer.usage


def test_vllm_finish_reasons_abort_is_retryable_and_repetition_is_a_cut_off():
    with pytest.raises(RetryableError) as info:
        parse_chat_completion(body('{"a": 1}', finish_reason="abort"), engine="e")
    assert info.value.kind == "aborted"
    assert parse_chat_completion(body('{"a": "again again', finish_reason="repetition"), engine="e").cut_off


def test_cached_input_is_counted_apart_from_the_rest_of_the_input():
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 10, "audio_tokens": 0}}
    answer = parse_chat_completion(body(usage=usage), engine="e")
    assert (answer.usage.input_tokens, answer.usage.cache_read_tokens, answer.usage.output_tokens) == (2, 10, 34)
    assert answer.usage.total == 46
    responses = parse_usage(
        {"input_tokens": 30, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 24}}, names=("input_tokens", "output_tokens")
    )
    assert (responses.input_tokens, responses.cache_read_tokens, responses.output_tokens) == (6, 24, 5)
    assert parse_usage({**USAGE, "prompt_tokens_details": None}).cache_read_tokens == 0


def test_input_written_to_the_prompt_cache_is_counted_apart_too():
    """GPT-5.6 and later report (and bill at 1.25 times the input) the input written to the cache, as the SDK types it:
    `prompt_tokens_details.cache_write_tokens`, `input_tokens_details.cache_write_tokens`."""
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 6}}
    answer = parse_chat_completion(body(usage=usage), engine="e")
    assert (answer.usage.input_tokens, answer.usage.cache_read_tokens, answer.usage.cache_write_tokens) == (2, 4, 6)
    assert answer.usage.total == 46
    responses = parse_usage(
        {"input_tokens": 30, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 24}},
        names=("input_tokens", "output_tokens"),
    )
    assert (responses.input_tokens, responses.cache_write_tokens) == (6, 24)
