"""The Gemini wire format through google-genai's types: a Request's contents and media parts, and the Answer in a
`GenerateContentResponse` (its candidates' text, thought summaries, finish reasons, usage)."""

from __future__ import annotations

from typing import Any

from google.genai import types

from chainette.client import Answer, Message, Usage, content_text
from chainette.errors import RowError
from chainette.media import read_bytes
from chainette.openai_format import raw_body

# Finish reasons of an answer withheld for its content (RowErrors of kind "content_filter"); MAX_TOKENS is a cut-off
# answer the core keeps only if it is valid as it is; any other reason but STOP fails the row with its name.
FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "MODEL_ARMOR"})
ROLES = {"user": "user", "assistant": "model"}


def contents_of(messages: list[Message]) -> tuple[str | None, list[types.Content]]:
    """The system instruction (the system messages' text) and the conversation as Gemini contents: user turns as
    `user`, assistant turns (a repair's failed answer) as `model`, media as their parts (`media_part`)."""
    system = [content_text(message["content"]) for message in messages if message["role"] == "system"]
    contents = [
        types.Content(role=ROLES.get(message["role"], "user"), parts=_parts(message["content"]))
        for message in messages
        if message["role"] != "system"
    ]
    return "\n\n".join(system) or None, contents


def _parts(content: str | list[dict[str, Any]]) -> list[types.Part]:
    if isinstance(content, str):
        return [types.Part(text=content)]
    return [types.Part(text=part["text"]) if part["type"] == "text" else media_part(part["field"], part["reference"]) for part in content]


def media_part(field: str, reference: dict[str, Any]) -> types.Part:
    """The Gemini part for a media reference (an image, a PDF, audio): its bytes inline (`inline_data`), or for an
    http(s) URL a `file_data` part that Gemini fetches itself."""
    url = reference.get("url")
    media_type = reference.get("media_type") or None
    if url:
        return types.Part(file_data=types.FileData(file_uri=str(url), mime_type=media_type))
    return types.Part(inline_data=types.Blob(mime_type=media_type, data=read_bytes(reference, field=field)))


def parse_usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    """The token counts of a response: `prompt_token_count` includes the input read from the implicit cache
    (`cached_content_token_count`), counted apart; thinking tokens are billed as output."""
    if metadata is None:
        return Usage()
    cached = metadata.cached_content_token_count or 0
    output = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
    return Usage(input_tokens=max((metadata.prompt_token_count or 0) - cached, 0), output_tokens=output, cache_read_tokens=cached)


def parse_response(response: types.GenerateContentResponse, *, engine: str) -> Answer:
    """The Answer in a response: its first candidate's text (thought parts apart, as the reasoning), the others as
    `alternatives` (a request for several candidates). A blocked prompt, a filtered candidate, an empty one or an
    unusable finish reason fails the row; every error carries the usage."""
    usage = parse_usage(response.usage_metadata)
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        detail = feedback.block_reason_message or feedback.block_reason.value
        raise RowError(f"engine '{engine}': Gemini blocked the prompt: {detail}", kind="content_filter", usage=usage)
    candidates = response.candidates or []
    if not candidates:
        raise RowError(f"engine '{engine}': the response has no candidate", kind="empty_answer", raw=_raw(response), usage=usage)
    answers = [_candidate(candidate, engine=engine, usage=usage, response=response) for candidate in candidates]
    first = answers[0]
    first.usage, first.alternatives = usage, answers[1:]
    return first


def _candidate(candidate: types.Candidate, *, engine: str, usage: Usage, response: types.GenerateContentResponse) -> Answer:
    parts = (candidate.content.parts if candidate.content else None) or []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    thoughts = "\n\n".join(part.text for part in parts if part.text and part.thought)
    reason = candidate.finish_reason.value if candidate.finish_reason is not None else "STOP"
    if reason in FILTERED:
        detail = candidate.finish_message or reason
        raise RowError(f"engine '{engine}': Gemini withheld the answer ({detail})", kind="content_filter", raw=text or None, usage=usage)
    if reason not in ("STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"):
        message = f"engine '{engine}': the answer ended with finish reason {reason}"
        raise RowError(message, kind="finish_reason", raw=text or _raw(response), usage=usage)
    if not text and reason != "MAX_TOKENS":
        raise RowError(f"engine '{engine}': the answer is empty", kind="empty_answer", raw=_raw(response), usage=usage)
    return Answer(text, reasoning=thoughts or None, cut_off=reason == "MAX_TOKENS")


def _raw(response: types.GenerateContentResponse) -> str:
    return raw_body(response.model_dump(mode="json", exclude_none=True))
