"""A loopback stand-in for the Gemini API (`POST /{version}/models/{model}:generateContent`), answering with bodies
built from google-genai's own response types, on the core's FakeServer (its faults, latency and records)."""

from __future__ import annotations

from collections.abc import Iterator
import json
from typing import Any

from aiohttp import web
import pytest

from chainette.backends.fake import synthesize
from chainette.testing import FakeServer

types = pytest.importorskip("google.genai.types")

API_KEY = "gm-test-key-0123456789"
MODEL = "fake-model"
PATH = f"/v1beta/models/{MODEL}:generateContent"


class GeminiServer(FakeServer):
    """FakeServer plus the Gemini generateContent route. `usage` overrides the usage metadata it reports; `finish`
    the finish reason of every candidate; `thought` adds a thought-summary part."""

    usage: dict[str, int] | None = None
    finish: str = "STOP"
    thought: str | None = None
    block: str | None = None

    def routes(self) -> list[web.RouteDef]:
        return [*super().routes(), web.post("/{version}/models/{model}:generateContent", self._generate)]

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"].endswith(":generateContent")]

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            error = {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
            return web.json_response({"error": error}, status=400)
        body, early, mangle = await self._receive(request)
        if early is not None:
            return early
        model = request.match_info["model"]
        if model not in self.models:
            error = {"code": 404, "message": f"models/{model} is not found", "status": "NOT_FOUND"}
            return web.json_response({"error": error}, status=404)
        return web.json_response(self.generated(body, mangle))

    def generated(self, body: dict[str, Any], mangle: str | None = None) -> dict[str, Any]:
        """The GenerateContentResponse answering `body`, as the API serialises it (camelCase JSON)."""
        config = body.get("generationConfig") or {}
        if self.block:
            feedback = types.GenerateContentResponsePromptFeedback(block_reason=self.block)
            return _dump(types.GenerateContentResponse(prompt_feedback=feedback, usage_metadata=self._usage()))
        schema = config.get("responseJsonSchema") or {"type": "object"}
        chat = {"messages": _as_messages(body)}
        candidates = []
        for index in range(config.get("candidateCount") or 1):
            text = self.respond(chat) if self.respond is not None else json.dumps(synthesize(schema, seed_text=repr(chat)))
            if mangle == "malformed":
                text = text[: len(text) // 2]
            parts = [types.Part(text=self.thought, thought=True)] if self.thought else []
            parts.append(types.Part(text=text))
            content = types.Content(role="model", parts=parts)
            candidates.append(types.Candidate(content=content, finish_reason=self.finish, index=index))
        return _dump(types.GenerateContentResponse(candidates=candidates, usage_metadata=self._usage(), model_version=MODEL))

    def _usage(self) -> types.GenerateContentResponseUsageMetadata:
        counts = self.usage or {"prompt_token_count": 11, "candidates_token_count": 7}
        return types.GenerateContentResponseUsageMetadata(**counts)


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _as_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The request's contents as chat messages (what FakeServer's responders read)."""
    roles = {"model": "assistant"}
    return [
        {"role": roles.get(content.get("role"), "user"), "content": "".join(part.get("text", "") for part in content.get("parts", []))}
        for content in body.get("contents", [])
    ]


@pytest.fixture
def gemini_server() -> Iterator[GeminiServer]:
    with GeminiServer(models=(MODEL,)) as server:
        yield server
