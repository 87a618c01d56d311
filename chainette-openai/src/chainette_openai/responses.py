"""The Responses API wire format (`POST /v1/responses`): a Request's text format, and the Answer in a response.

Responses are sent with `store: false`: a pipeline's prompts and answers are not kept by OpenAI for later use.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
from typing import Any

from chainette.client import Answer, Request, Usage
from chainette.errors import RetryableError, RowError

# Answers cut off before their end: kept only if valid as they are (see chainette.client.Answer.cut_off).
CUT_OFF_REASONS = frozenset({"max_output_tokens"})


def text_format(request: Request, strict_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The `text.format` asking for `request`'s schema; strict when `strict_schema` (its strict form) is given."""
    schema, strict = (strict_schema, True) if strict_schema is not None else (request.schema, False)
    return {"type": "json_schema", "name": request.schema_name, "schema": schema, "strict": strict}


def parse_response(body: Any, *, engine: str) -> Answer:
    """The Answer in a decoded Response: the text of its message's `output_text` parts, the summaries of its
    reasoning items, and its usage. A refusal and the content filter are RowErrors; a response that failed is a
    RetryableError; one stopped at `max_output_tokens` is an Answer marked `cut_off`. Every error carries the usage."""
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    usage = _usage(fields.get("usage"))
    items = [item for item in fields.get("output") or [] if isinstance(item, Mapping)]
    parts = [part for item in items if item.get("type") == "message" for part in item.get("content") or [] if isinstance(part, Mapping)]
    refusal = next((part.get("refusal") for part in parts if part.get("type") == "refusal"), None)
    if refusal:
        raise RowError(f"engine '{engine}': the model refused: {refusal}", kind="refusal", raw=str(refusal), usage=usage)
    status = fields.get("status")
    reason = (fields.get("incomplete_details") or {}).get("reason")
    if status == "failed" or (not items and status != "incomplete"):
        error = fields.get("error") or {}
        detail = error.get("message") if isinstance(error, Mapping) else None
        raise RetryableError(
            f"engine '{engine}': the response failed: {detail or status}", kind="bad_response", raw=_raw(body), usage=usage
        )
    if reason == "content_filter":
        raise RowError(f"engine '{engine}': the answer was withheld by the content filter", kind="content_filter", usage=usage)
    text = "".join(str(part.get("text") or "") for part in parts if part.get("type") == "output_text")
    cut_off = status == "incomplete" and reason in CUT_OFF_REASONS
    if not text and not cut_off:
        raise RowError(f"engine '{engine}': the answer is empty", kind="empty_answer", raw=_raw(body), usage=usage)
    summaries = [
        str(s.get("text")) for item in items if item.get("type") == "reasoning" for s in item.get("summary") or [] if isinstance(s, Mapping)
    ]
    return Answer(text, reasoning="\n\n".join(summaries) or None, usage=usage, cut_off=cut_off)


def _usage(report: Any) -> Usage:
    if not isinstance(report, Mapping):
        return Usage()
    return Usage(input_tokens=report.get("input_tokens") or 0, output_tokens=report.get("output_tokens") or 0)


def _raw(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, default=str)[:2000]
