"""The Messages API wire format (`POST /v1/messages`): a Request's system blocks and messages (media as `image` and
`document` blocks), and the Answer in a Message."""

from __future__ import annotations

from collections.abc import Mapping
import json
from typing import Any

from chainette.client import Answer, Message, Usage
from chainette.errors import RetryableError, RowError
from chainette.media import base64_of
from chainette.openai_format import raw_body, read_choice

CUT_OFF_STOPS = frozenset({"max_tokens", "model_context_window_exceeded"})


def system_blocks(messages: list[Message]) -> list[dict[str, Any]]:
    """The request's system messages as `system` text blocks."""
    return [{"type": "text", "text": str(message["content"])} for message in messages if message["role"] == "system" and message["content"]]


def turns(messages: list[Message]) -> list[dict[str, Any]]:
    """The request's user and assistant messages as the API's `messages`, each media part as its block."""
    return [{"role": message["role"], "content": content_blocks(message["content"])} for message in messages if message["role"] != "system"]


def content_blocks(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [
        {"type": "text", "text": part["text"]} if part["type"] == "text" else media_block(part["field"], part["reference"])
        for part in content
    ]


def media_block(field: str, reference: dict[str, Any]) -> dict[str, Any]:
    """The block for a media reference (the Messages API reference): `image` or `document` (a PDF), its source the
    http(s) URL or the base64 bytes. Audio has no block: the start check refuses it."""
    kind = reference["media"]
    if kind not in ("image", "document"):
        raise RowError(f"field '{field}': the Messages API takes no {kind} input", kind="media")
    url = reference.get("url")
    if url:
        source: dict[str, Any] = {"type": "url", "url": url}
    else:
        source = {"type": "base64", "media_type": reference["media_type"], "data": base64_of(reference, field=field)}
    return {"type": kind, "source": source}


def parse_usage(report: Any) -> Usage:
    """The token counts of a Message's `usage`: Anthropic's `input_tokens` already leaves out the input read from and
    written to the prompt cache, reported apart."""
    if not isinstance(report, Mapping):
        return Usage()
    return Usage(
        input_tokens=report.get("input_tokens") or 0,
        output_tokens=report.get("output_tokens") or 0,
        cache_read_tokens=report.get("cache_read_input_tokens") or 0,
        cache_write_tokens=report.get("cache_creation_input_tokens") or 0,
    )


def parse_message(body: Any, *, engine: str) -> Answer:
    """The Answer in a decoded Message, read as the chat-completion choice it amounts to (see `read_choice`): the text
    of its `text` blocks, or the input of its `tool_use` block as JSON text (forced tool use), its `thinking` blocks as
    the reasoning, `stop_reason` refusal as a refusal and max_tokens as the token limit (also before any text: the
    budget went on thinking, which the core reports as truncated). A body without content is a RetryableError. Every
    error carries the usage."""
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    usage = parse_usage(fields.get("usage"))
    blocks = fields.get("content")
    if not isinstance(blocks, list):
        raise RetryableError(
            f"engine '{engine}': the answer is not a message (no content)", kind="bad_response", raw=raw_body(body), usage=usage
        )
    blocks = [block for block in blocks if isinstance(block, Mapping)]
    tool_input = next((block.get("input") for block in blocks if block.get("type") == "tool_use"), None)
    text = (
        json.dumps(tool_input) if tool_input is not None else "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    )
    reasoning = "\n\n".join(str(b.get("thinking")) for b in blocks if b.get("type") == "thinking" and b.get("thinking")) or None
    stop = fields.get("stop_reason")
    if stop in CUT_OFF_STOPS and not text:
        return Answer("", reasoning=reasoning, usage=usage, cut_off=True)
    refusal = (text or "the model declined to answer") if stop == "refusal" else None
    message = {"content": text, "refusal": refusal, "reasoning": reasoning}
    answer = read_choice(
        {"message": message, "finish_reason": "length" if stop in CUT_OFF_STOPS else "stop"}, engine=engine, usage=usage, body=body
    )
    answer.usage = usage
    return answer
