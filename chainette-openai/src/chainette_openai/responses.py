"""The Responses API wire format (`POST /v1/responses`): a Request's text format and media parts, and the Answer in a\nresponse.

Responses are sent with `store: false`: a pipeline's prompts and answers are not kept by OpenAI for later use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainette.client import Answer, Request
from chainette.errors import RetryableError, RowError
from chainette.media import data_url
from chainette.openai_format import file_name, parse_usage, raw_body, read_choice

# The chat-completions finish reason of each reason a Response is `incomplete`.
FINISH_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def text_format(request: Request, strict_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The `text.format` asking for `request`'s schema; strict when `strict_schema` (its strict form) is given."""
    schema, strict = (strict_schema, True) if strict_schema is not None else (request.schema, False)
    return {"type": "json_schema", "name": request.schema_name, "schema": schema, "strict": strict}


def media_part(field: str, reference: dict[str, Any]) -> dict[str, Any]:
    """The Responses input part for a media reference (the OpenAI API reference, `ResponseInputContent`): `input_image`
    (a data URL or the http(s) URL in `image_url`, `detail` required) or `input_file` (a PDF as a data URL in
    `file_data`, or its URL in `file_url`). Audio has no Responses input part: the start check refuses it."""
    if reference["media"] == "image":
        return {"type": "input_image", "image_url": data_url(reference, field=field), "detail": "auto"}
    if reference["media"] == "document":
        if reference.get("url"):
            return {"type": "input_file", "file_url": reference["url"]}
        return {"type": "input_file", "filename": file_name(field, reference), "file_data": data_url(reference, field=field)}
    raise RowError(f"field '{field}': the Responses API takes no audio input; use api: chat for audio", kind="media")


def parse_response(body: Any, *, engine: str) -> Answer:
    """The Answer in a decoded Response, read as the chat-completion choice it amounts to (see `read_choice`): the
    text of its message's `output_text` parts, its refusal, the summaries of its reasoning items, `incomplete` at
    `max_output_tokens` as the token limit (also before any text: a reasoning model spent its budget, which the core
    reports as truncated) and at `content_filter` as the filter. A failed or empty response is a RetryableError.
    Every error carries the usage."""
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    usage = parse_usage(fields.get("usage"), names=("input_tokens", "output_tokens"))
    items = [item for item in fields.get("output") or [] if isinstance(item, Mapping)]
    status = fields.get("status")
    if status == "failed" or (not items and status != "incomplete"):
        error = fields.get("error")
        detail = error.get("message") if isinstance(error, Mapping) else None
        raise RetryableError(
            f"engine '{engine}': the response failed: {detail or status}", kind="bad_response", raw=raw_body(body), usage=usage
        )
    parts = [part for item in items if item.get("type") == "message" for part in item.get("content") or [] if isinstance(part, Mapping)]
    summaries = [
        str(s.get("text")) for item in items if item.get("type") == "reasoning" for s in item.get("summary") or [] if isinstance(s, Mapping)
    ]
    message = {
        "content": "".join(str(part.get("text") or "") for part in parts if part.get("type") == "output_text"),
        "refusal": next((part.get("refusal") for part in parts if part.get("type") == "refusal"), None),
        "reasoning": "\n\n".join(summaries) or None,
    }
    reason = (fields.get("incomplete_details") or {}).get("reason") if status == "incomplete" else None
    finish = FINISH_REASONS.get(reason, "stop") if reason else "stop"
    if finish == "length" and not message["content"]:
        return Answer("", reasoning=message["reasoning"], usage=usage, cut_off=True)  # the budget went on reasoning: truncated
    answer = read_choice({"message": message, "finish_reason": finish}, engine=engine, usage=usage, body=body)
    answer.usage = usage
    return answer
