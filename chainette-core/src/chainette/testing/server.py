"""A loopback fake LLM server speaking the OpenAI chat-completions (vLLM), OpenAI Responses and Ollama wire formats.

It runs on 127.0.0.1 on a free port in a background thread, answers with JSON synthesised from
the request's schema, records every request, and can be told to fail, slow down or answer badly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
import hashlib
import json
import random
import threading
import time
from typing import Any

from aiohttp import web

from chainette.backends.fake import synthesize
from chainette.testing.batches import FakeBatches

Responder = Callable[[dict[str, Any]], str]
CHAT_PATHS = ("/v1/chat/completions", "/v1/responses", "/api/chat")
ANSWER_TOKENS = 7


@dataclass
class FaultPlan:
    """Random faults on chat requests, repeatable: the draw for a request depends only on `seed`, the
    request's body and how many times that body was seen, not on arrival order."""

    seed: int = 0
    rate_limit: float = 0.0
    server_error: float = 0.0
    malformed: float = 0.0
    prose: float = 0.0
    hang: float = 0.0
    drop: float = 0.0
    retry_after: float = 0.05
    hang_seconds: float = 5.0

    def draw(self, body: dict[str, Any], attempt: int) -> str | None:
        """The fault for this request: "rate_limit", "server_error", "malformed", "prose", "hang", "drop" or None."""
        key = f"{self.seed}:{attempt}:{json.dumps(body, sort_keys=True)}"
        point = random.Random(hashlib.blake2b(key.encode(), digest_size=8).digest()).random()
        for name in ("rate_limit", "server_error", "malformed", "prose", "hang", "drop"):
            point -= getattr(self, name)
            if point < 0:
                return name
        return None


@dataclass
class Fault:
    """One injected failure: an HTTP status (with optional Retry-After), a hang, a dropped connection,
    or a 200 whose answer is `"malformed"` (cut-off JSON) or `"prose"` (JSON wrapped in text and a code fence)."""

    status: int = 500
    retry_after: float | None = None
    hang: float = 0.0
    drop: bool = False
    body: Any = None
    answer: str | None = None


class FakeServer:
    """Use as a context manager; `base_url` is `http://127.0.0.1:PORT` (a free port unless `port` is given).

    `latency` is the seconds each chat request takes; `capacity` (optional) how many it serves at
    once, the others queueing, like a GPU server's batch, or, with `refuse_beyond` (a status such as 429), answered at
    once with that status, like a provider over its rate limit (`refused` counts them). To stand in for a compatible server that is not
    vLLM: `rejects` holds the response_format types it answers with HTTP 500 (llama-cpp-python rejects
    `json_schema`), and `token_fields` the token-limit fields it reads, first found first (a limit below the
    answer's 7 tokens stops it there, `finish_reason` "length").

    A stand-in for another provider's API subclasses it: it adds its own `routes` to these, and its `chat_paths` count as
    chat endpoints (`chat_requests`, `fail_next`).
    """

    chat_paths: tuple[str, ...] = CHAT_PATHS

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("fake-model",),
        latency: float = 0.0,
        api_key: str | None = None,
        reasoning: str | None = None,
        respond: Responder | None = None,
        port: int = 0,
        plan: FaultPlan | None = None,
        capacity: int | None = None,
        refuse_beyond: int | None = None,
        rejects: tuple[str, ...] = (),
        token_fields: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
    ):
        self.models = models
        self.latency = latency
        self.api_key = api_key
        self.reasoning = reasoning
        self.respond = respond
        self.plan = plan
        self.capacity = capacity
        self.refuse_beyond = refuse_beyond
        self.refused = 0
        self.rejects = rejects
        self.token_fields = token_fields
        self.seen: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = port
        self.batches = FakeBatches(self)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, *faults: Fault) -> None:
        """Make the next requests to the chat endpoints fail, one fault per request, in order."""
        with self._lock:
            self.faults.extend(faults)

    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received on the chat endpoints."""
        return [r["body"] for r in self.requests if r["path"] in self.chat_paths]

    def __enter__(self) -> FakeServer:
        self._thread = threading.Thread(target=self._serve, name="chainette-fake-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (connections are then refused); safe to call more than once."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(self.capacity) if self.capacity else None
        app = web.Application()
        app.add_routes(self.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def routes(self) -> list[web.RouteDef]:
        """The routes served; a subclass standing in for another provider's API (a backend's own tests) adds its own."""
        return [
            web.get("/health", self._health),
            web.get("/v1/models", self._openai_models),
            web.post("/v1/chat/completions", self._openai_chat),
            web.post("/v1/responses", self._openai_responses),
            web.get("/api/tags", self._ollama_tags),
            web.get("/api/version", self._ollama_version),
            web.post("/api/chat", self._ollama_chat),
            *self.batches.routes(),
        ]

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _openai_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models]})

    async def _ollama_tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": m, "model": m} for m in self.models]})

    async def _ollama_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.0.0-fake"})

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        body, early, mangle = await self._openai_receive(request)
        if early is not None:
            return early
        wanted = (body.get("response_format") or {}).get("type")
        if wanted in self.rejects:
            message = f"1 validation error: response_format.type: Input should be 'text' or 'json_object', got {wanted!r}"
            return web.json_response({"error": {"message": message, "type": "internal_server_error"}}, status=500)
        return web.json_response(self.completion(body, mangle))

    async def _openai_responses(self, request: web.Request) -> web.StreamResponse:
        body, early, mangle = await self._openai_receive(request)
        if early is not None:
            return early
        return web.json_response(self.response(body, mangle))

    async def _openai_receive(self, request: web.Request) -> tuple[dict[str, Any], web.StreamResponse | None, str | None]:
        """The body of an OpenAI-format request, or the early answer: a fault, a refused key, an unknown model."""
        if not self._authorized(request):
            error: dict[str, Any] = {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}
            return {}, web.json_response({"error": error}, status=401), None
        body, early, mangle = await self._receive(request)
        if early is None and body.get("model") not in self.models:
            error = {"message": f"The model `{body.get('model')}` does not exist.", "type": "NotFoundError", "code": 404}
            return body, web.json_response({"error": error}, status=404), None
        return body, early, mangle

    def completion(self, body: dict[str, Any], mangle: str | None = None) -> dict[str, Any]:
        """The chat completion answering `body` (with its `n` choices)."""
        wanted = body.get("response_format") or {}
        schema = wanted.get("json_schema", {}).get("schema") or wanted.get("schema") or wanted.get("value") or {"type": "object"}
        message: dict[str, Any] = {"role": "assistant"}
        if self.reasoning is not None:
            message["reasoning"] = self.reasoning
        limit = self._token_limit(body)
        finish = "length" if limit < ANSWER_TOKENS else "stop"
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": index, "message": {**message, "content": self._answer(body, schema, mangle)}, "finish_reason": finish}
                for index in range(body.get("n") or 1)
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": min(limit, ANSWER_TOKENS), "total_tokens": 11 + min(limit, ANSWER_TOKENS)},
        }

    def response(self, body: dict[str, Any], mangle: str | None = None) -> dict[str, Any]:
        """The Responses API answer to `body`: one message, a reasoning summary when the server has `reasoning`."""
        schema = ((body.get("text") or {}).get("format") or {}).get("schema") or {"type": "object"}
        output: list[dict[str, Any]] = []
        if self.reasoning is not None:
            output.append({"type": "reasoning", "id": "rs_0", "summary": [{"type": "summary_text", "text": self.reasoning}]})
        text = self._answer({**body, "messages": body.get("input")}, schema, mangle)
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output.append({"type": "message", "id": "msg_0", "role": "assistant", "status": "completed", "content": content})
        return {
            "id": f"resp_{len(self.requests)}",
            "object": "response",
            "created_at": int(time.time()),
            "model": body["model"],
            "status": "completed",
            "output": output,
            "usage": {"input_tokens": 11, "output_tokens": ANSWER_TOKENS, "total_tokens": 11 + ANSWER_TOKENS},
        }

    def _token_limit(self, body: dict[str, Any]) -> int:
        """The answer's token limit: the first of `token_fields` the body gives (no limit: the whole answer)."""
        return next((int(body[field]) for field in self.token_fields if body.get(field) is not None), ANSWER_TOKENS)

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        body, early, mangle = await self._receive(request)
        if early is not None:
            return early
        if body.get("model") not in self.models:
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        wire_schema = body.get("format")
        schema: dict[str, Any] = wire_schema if isinstance(wire_schema, dict) else {"type": "object"}
        message: dict[str, Any] = {"role": "assistant", "content": self._answer(body, schema, mangle)}
        if self.reasoning is not None:
            message["thinking"] = self.reasoning
        return web.json_response(
            {
                "model": body["model"],
                "created_at": "2026-01-01T00:00:00Z",
                "message": message,
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 11,
                "eval_count": 7,
            }
        )

    async def _receive(self, request: web.Request) -> tuple[dict[str, Any], web.StreamResponse | None, str | None]:
        body = await request.json()
        with self._lock:
            self.requests.append({"path": request.path, "query": request.query_string, "body": body, "headers": dict(request.headers)})
            fault = self.faults.pop(0) if self.faults else self._planned(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._slots is not None and self.refuse_beyond is not None and self._slots.locked():
                with self._lock:
                    self.refused += 1
                error = {"message": "Too many requests in flight", "type": "rate_limit_error"}
                return body, web.json_response({"error": error}, status=self.refuse_beyond), None
            if self._slots is not None:
                async with self._slots:
                    await asyncio.sleep(self.latency)
            elif self.latency:
                await asyncio.sleep(self.latency)
            if fault is None or fault.answer:
                return body, None, fault.answer if fault else None
            return body, await self._apply(fault, request), None
        finally:
            with self._lock:
                self.in_flight -= 1

    def _planned(self, body: dict[str, Any]) -> Fault | None:
        if self.plan is None:
            return None
        key = json.dumps(body, sort_keys=True)
        self.seen[key] += 1
        kind = self.plan.draw(body, self.seen[key])
        if kind is None:
            return None
        faults = {
            "rate_limit": Fault(status=429, retry_after=self.plan.retry_after),
            "server_error": Fault(status=500),
            "hang": Fault(hang=self.plan.hang_seconds, status=500),
            "drop": Fault(drop=True),
        }
        if kind in ("malformed", "prose"):
            return Fault(status=200, answer=kind)
        return faults.get(kind)

    async def _apply(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.hang:
            await asyncio.sleep(fault.hang)
        if fault.drop:
            if request.transport is not None:  # None: the client has gone already
                request.transport.close()
            return web.Response(status=500)
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        body = fault.body if fault.body is not None else {"error": {"message": f"injected fault {fault.status}", "type": "server_error"}}
        return web.json_response(body, status=fault.status, headers=headers)

    def _answer(self, body: dict[str, Any], schema: dict[str, Any], mangle: str | None = None) -> str:
        text = self.respond(body) if self.respond is not None else json.dumps(synthesize(schema, seed_text=repr(body.get("messages"))))
        if mangle == "malformed":
            return text[: len(text) // 2]
        if mangle == "prose":
            return f"Sure! Here is the JSON you asked for:\n```json\n{text}\n```\nLet me know if you need anything else."
        return text

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"
