"""The OpenAI chat-completions wire format, shared by the backends that speak it: reading answers, and writing the\nmessages of a request that places media."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import json
from typing import Any

from chainette.client import Answer, Message, Usage
from chainette.errors import CUT_OFF, BackendError, RetryableError, RowError, error_for_status, finish_error
from chainette.media import base64_of, data_url


def parse_usage(report: Any, *, names: tuple[str, str] = ("prompt_tokens", "completion_tokens")) -> Usage:
    """The token counts of an OpenAI `usage` object (a JSON mapping; `names`: its input and output counts, the Responses
    API's `input_tokens` and `output_tokens`); zeros for what it lacks or when it is not one. The input read from the
    prompt cache and the input written to it (`*_tokens_details.cached_tokens` and `cache_write_tokens`, which GPT-5.6
    and later bill at 1.25 times the input; both inside the input count) are counted apart."""
    if not isinstance(report, Mapping):
        return Usage()
    input_name, output_name = names
    details = report.get(f"{input_name}_details")
    details = details if isinstance(details, Mapping) else {}
    cached, written = details.get("cached_tokens") or 0, details.get("cache_write_tokens") or 0
    return Usage(
        input_tokens=(report.get(input_name) or 0) - cached - written,
        output_tokens=report.get(output_name) or 0,
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )


def parse_chat_completion(body: Any, *, engine: str) -> Answer:
    """The Answer in a decoded chat-completion body: `choices[0].message.content`, its `reasoning` (or
    `reasoning_content`), the usage, and the other choices as `alternatives` (a request with `n`).

    Every error raised carries the body's usage. A body without `choices[0].message` is a RetryableError (kind
    bad_response): a malformed answer is most likely transient, like a body that is not JSON. A refusal, a finish
    reason that makes the answer unusable (see `finish_error`) and an empty content, in any choice, are RowErrors; a
    choice cut off at the token limit is an Answer marked `cut_off`.
    """
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    usage = parse_usage(fields.get("usage"))
    choices = fields.get("choices")
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, Mapping) and isinstance(c.get("message"), Mapping) for c in choices)
    ):
        problem = f"engine '{engine}': the answer is not a chat completion (no choices[0].message)"
        raise RetryableError(problem, kind="bad_response", raw=raw_body(body), usage=usage)
    first, *others = (read_choice(choice, engine=engine, usage=usage, body=body) for choice in choices)
    first.usage, first.alternatives = usage, others
    return first


def read_choice(choice: Mapping[str, Any], *, engine: str, usage: Usage, body: Any) -> Answer:
    """One chat-completion choice's answer (no usage: the request's is the first answer's); a RowError, carrying
    `usage` and `body` as its raw text, when it cannot be used."""
    message: Mapping[str, Any] = choice["message"]
    refusal = message.get("refusal")
    if refusal:
        raise RowError(f"engine '{engine}': the model refused: {refusal}", kind="refusal", raw=str(refusal), usage=usage)
    content = message.get("content")
    text = content if isinstance(content, str) else None
    error = finish_error(choice.get("finish_reason"), engine=engine, text=text, usage=usage)
    if error is not None:
        raise error
    if not text:
        raise RowError(f"engine '{engine}': the answer is empty", kind="empty_answer", raw=raw_body(body), usage=usage)
    reasoning = message.get("reasoning") or message.get("reasoning_content") or None
    return Answer(text, reasoning=reasoning if isinstance(reasoning, str) else None, cut_off=choice.get("finish_reason") in CUT_OFF)


def raw_body(body: Any) -> str:
    """`body` as the raw text an error keeps: its JSON, cut at 2,000 characters."""
    return json.dumps(body, ensure_ascii=False, default=str)[:2000]


def parse_batch_result(
    line: Mapping[str, Any], *, engine: str, parse: Callable[[Any], Answer] | None = None
) -> tuple[str, Answer | BackendError]:
    """One line of an OpenAI-format batch output or error file (the OpenAI Batch API's, `vllm run-batch`'s): its
    custom_id, and the Answer in its response (read by `parse`; chat completions by default) or the error it got
    (a line the batch never ran is retryable)."""
    key = str(line.get("custom_id"))
    error = line.get("error")
    response = line.get("response")
    if error or not isinstance(response, Mapping):
        reason = error.get("message") or error.get("code") if isinstance(error, Mapping) else "no response"
        code = error.get("code") if isinstance(error, Mapping) else None
        return key, RetryableError(f"engine '{engine}': the batch did not answer this request: {reason}", kind=str(code or "batch_error"))
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        detail = body.get("error") if isinstance(body, Mapping) else None
        message = str(detail.get("message")) if isinstance(detail, Mapping) else json.dumps(body)
        code = detail.get("code") if isinstance(detail, Mapping) and isinstance(detail.get("code"), str) else None
        return key, error_for_status(int(status or 0), message, engine=engine, code=code)
    try:
        return key, parse(body) if parse is not None else parse_chat_completion(body, engine=engine)
    except BackendError as exc:
        return key, exc


def wire_messages(
    messages: list[Message], media_part: Callable[[str, dict[str, Any]], dict[str, Any]], text_type: str = "text"
) -> list[Message]:
    """`messages` as sent: each media part replaced by the wire part `media_part(field, reference)` makes (its bytes
    read now, dropped with the request), each text part typed `text_type`. Text-only messages are returned as they are."""
    if all(type(message["content"]) is str for message in messages):
        return messages
    return [
        message if type(message["content"]) is str else {**message, "content": _parts(message["content"], media_part, text_type)}
        for message in messages
    ]


def _parts(
    content: list[dict[str, Any]], media_part: Callable[[str, dict[str, Any]], dict[str, Any]], text_type: str
) -> list[dict[str, Any]]:
    return [
        {"type": text_type, "text": part["text"]} if part["type"] == "text" else media_part(part["field"], part["reference"])
        for part in content
    ]


AUDIO_FORMATS = {"audio/wav": "wav", "audio/mpeg": "mp3"}
"""The audio Chat Completions' `input_audio` takes, by media type (the OpenAI API reference: "wav" or "mp3")."""


def chat_media_part(field: str, reference: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI Chat Completions part for a media reference: `image_url` (a data URL or the http(s) URL), `input_audio`
    (base64 WAV or MP3) or `file` (a PDF as a data URL in `file_data`); a RowError for what the API cannot take."""
    kind = reference["media"]
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": data_url(reference, field=field)}}
    if kind == "audio":
        audio_format = AUDIO_FORMATS.get(reference["media_type"])
        if audio_format is None:
            raise RowError(
                f"field '{field}': {reference['media_type'] or 'this audio'} cannot be sent: Chat Completions takes WAV or MP3 audio",
                kind="media",
            )
        return {"type": "input_audio", "input_audio": {"data": base64_of(reference, field=field), "format": audio_format}}
    if reference.get("url"):
        raise RowError(
            f"field '{field}': Chat Completions takes a document's bytes, not its URL; the Responses API (api: responses) takes URLs",
            kind="media",
        )
    return {"type": "file", "file": {"filename": file_name(field, reference), "file_data": data_url(reference, field=field)}}


def file_name(field: str, reference: dict[str, Any]) -> str:
    """The name a document is sent under: its file's name, else the field's with the type's extension."""
    path = reference.get("path") or reference.get("url") or ""
    name = str(path).rsplit("/", 1)[-1].split("?", 1)[0]
    return name or f"{field}.pdf"
