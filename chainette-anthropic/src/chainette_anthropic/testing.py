"""A loopback stand-in for Anthropic's Messages API, for tests: `FakeAnthropic` is a `chainette.testing.FakeServer`
(faults, latency, recorded requests) that also serves `POST /v1/messages` and Message Batches, answering with bodies
built from the anthropic SDK's own response types.

An answer follows the request's schema (`output_config.format.schema`, or the forced tool's `input_schema`); a system
block marked `cache_control` is counted as written to the prompt cache the first time its prefix is seen and as read
from it afterwards (its characters / 4 tokens). Batches end after `polls_to_finish` looks; `batch_error` gives some
requests an error type, `expire` makes the requests it names expire; a cancelled batch's unanswered requests end canceled.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
import itertools
import json
from typing import Any

from aiohttp import web
from anthropic.types import Message, TextBlock, ThinkingBlock, ToolUseBlock, Usage
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse, MessageBatchRequestCounts

from chainette.testing.server import ANSWER_TOKENS, CHAT_PATHS, FakeServer

INPUT_TOKENS = 11


class FakeAnthropic(FakeServer):
    """Use as a context manager, like FakeServer; `api_key`, when set, is the key it takes."""

    chat_paths = (*CHAT_PATHS, "/v1/messages")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.cached: set[str] = set()
        self.message_batches: dict[str, dict[str, Any]] = {}
        self.cancelled_batches: list[str] = []
        self.polls_to_finish = 2
        self.batch_error: Callable[[str], str | None] = lambda custom_id: None
        self.expire: Callable[[str], bool] = lambda custom_id: False
        self._batch_ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.post("/v1/messages", self._messages),
            web.post("/v1/messages/batches", self._create_batch),
            web.get("/v1/messages/batches/{id}", self._retrieve_batch),
            web.get("/v1/messages/batches/{id}/results", self._batch_results),
            web.post("/v1/messages/batches/{id}/cancel", self._cancel_batch),
        ]

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._key_ok(request):
            return _error(401, "authentication_error", "invalid api key")
        body, early, mangle = await self._receive(request)
        if early is not None:
            return early
        if body.get("model") not in self.models:
            return _error(404, "not_found_error", f"model: {body.get('model')}")
        return web.json_response(self.message(body, mangle))

    def message(self, body: dict[str, Any], mangle: str | None = None) -> dict[str, Any]:
        """The Message answering the request `body`."""
        tools = body.get("tools") or []
        schema = tools[0]["input_schema"] if tools else ((body.get("output_config") or {}).get("format") or {}).get("schema")
        text = self._answer(body, schema or {"type": "object"}, mangle)
        content: list[Any] = [ThinkingBlock(type="thinking", thinking=self.reasoning, signature="fake")] if self.reasoning else []
        if tools and mangle is None:
            content.append(ToolUseBlock(type="tool_use", id="toolu_0", name=tools[0]["name"], input=json.loads(text)))
        else:
            content.append(TextBlock(type="text", text=text))
        limit = int(body.get("max_tokens") or ANSWER_TOKENS)
        stop = "max_tokens" if limit < ANSWER_TOKENS else ("tool_use" if tools else "end_turn")
        message = Message(
            id=f"msg_{len(self.requests)}",
            type="message",
            role="assistant",
            model=body["model"],
            content=content,
            stop_reason=stop,
            usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=min(limit, ANSWER_TOKENS), **self._cache_usage(body)),
        )
        return message.model_dump(mode="json")

    def _cache_usage(self, body: dict[str, Any]) -> dict[str, int]:
        """The prompt cache's share of the input: the prefix up to the last block marked cache_control, read if seen."""
        system = body.get("system") or []
        marked = [index for index, block in enumerate(system) if isinstance(block, dict) and block.get("cache_control")]
        if not marked:
            return {"cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        prefix = json.dumps([body.get("tools"), body.get("output_config"), system[: marked[-1] + 1]], sort_keys=True)
        tokens = len(prefix) // 4
        if prefix in self.cached:
            return {"cache_read_input_tokens": tokens, "cache_creation_input_tokens": 0}
        self.cached.add(prefix)
        return {"cache_read_input_tokens": 0, "cache_creation_input_tokens": tokens}

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        if not self._key_ok(request):
            return _error(401, "authentication_error", "invalid api key")
        body = await request.json()
        self.requests.append({"path": request.path, "query": request.query_string, "body": body, "headers": dict(request.headers)})
        batch_id = f"msgbatch_{next(self._batch_ids)}"
        self.message_batches[batch_id] = {"requests": body["requests"], "polls": 0, "status": "in_progress", "results": None}
        return web.json_response(self._batch(batch_id))

    async def _retrieve_batch(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["id"]
        if batch_id not in self.message_batches:
            return _error(404, "not_found_error", f"no batch {batch_id}")
        state = self.message_batches[batch_id]
        state["polls"] += 1
        if state["status"] == "in_progress" and state["polls"] >= self.polls_to_finish:
            self._end(batch_id, canceled=False)
        return web.json_response(self._batch(batch_id))

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["id"]
        self.cancelled_batches.append(batch_id)
        if self.message_batches[batch_id]["status"] == "in_progress":
            self._end(batch_id, canceled=True)
        return web.json_response(self._batch(batch_id))

    async def _batch_results(self, request: web.Request) -> web.StreamResponse:
        state = self.message_batches[request.match_info["id"]]
        lines = "".join(result.model_dump_json() + "\n" for result in state["results"])
        return web.Response(body=lines.encode(), content_type="application/binary")

    def _end(self, batch_id: str, *, canceled: bool) -> None:
        """End a batch: each request answered, errored, expired, or canceled (a batch cancelled before its end)."""
        state = self.message_batches[batch_id]
        results = []
        for item in state["requests"]:
            key = item["custom_id"]
            error = self.batch_error(key)
            if canceled:
                result: dict[str, Any] = {"type": "canceled"}
            elif self.expire(key):
                result = {"type": "expired"}
            elif error:
                result = {"type": "errored", "error": {"type": "error", "error": {"type": error, "message": f"injected {error}"}}}
            else:
                result = {"type": "succeeded", "message": self.message(item["params"])}
            results.append(MessageBatchIndividualResponse.model_validate({"custom_id": key, "result": result}))
        state.update(status="ended", results=results)

    def _batch(self, batch_id: str) -> dict[str, Any]:
        state = self.message_batches[batch_id]
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if state["results"] is None:
            counts["processing"] = len(state["requests"])
        for result in state["results"] or []:
            counts[result.result.type] += 1
        created = datetime(2026, 1, 1, tzinfo=timezone.utc)
        ended = state["status"] == "ended"
        batch = MessageBatch(
            id=batch_id,
            type="message_batch",
            processing_status=state["status"],
            request_counts=MessageBatchRequestCounts(**counts),
            created_at=created,
            expires_at=created + timedelta(hours=24),
            ended_at=created if ended else None,
            results_url=f"{self.base_url}/v1/messages/batches/{batch_id}/results" if ended else None,
        )
        return batch.model_dump(mode="json")

    def _key_ok(self, request: web.Request) -> bool:
        """The key, as the API takes it: `x-api-key`, or `Authorization: Bearer` (what the SDK 2.x sends)."""
        return self.api_key is None or self.api_key in (request.headers.get("x-api-key"), request.headers.get("Authorization", "")[7:])


def _error(status: int, kind: str, message: str) -> web.Response:
    """An error answer in the API's form (`{"type": "error", "error": {"type", "message"}}`)."""
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)
