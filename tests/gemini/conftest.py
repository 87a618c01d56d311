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

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.jobs: dict[str, dict[str, Any]] = {}  # batch name -> its model, source, state
        self.created: list[str] = []
        self.cancelled: list[str] = []
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytearray] = {}
        self.hold = False  # batches stay running until False
        self.outcomes: list[str] = []  # how the next batches end, in turn (then SUCCEEDED); FAILED and EXPIRED answer nothing
        self.line_error: dict[str, dict[str, Any]] = {}  # key -> the error its line gets, once
        self.lost_creates = 0  # batches created whose answer is a 504, as when a gateway times out

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.post("/{version}/models/{model}:generateContent", self._generate),
            web.post("/{version}/models/{model}:batchGenerateContent", self._batch_create),
            web.get("/{version}/batches/{name}", self._batch_get),
            web.get("/{version}/batches", self._batch_list),
            web.post("/{version}/batches/{name}:cancel", self._batch_cancel),
            web.post("/upload/{version}/files", self._upload_start),
            web.post("/upload-session/{name}", self._upload_chunk),
            web.get("/{version}/files/{name}:download", self._download),
        ]

    async def _batch_create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        name = f"batches/{len(self.jobs) + 1}"
        batch = body["batch"]
        self.jobs[name] = {"model": request.match_info["model"], "input": batch["inputConfig"], "state": "BATCH_STATE_PENDING"}
        self.jobs[name]["display_name"] = batch.get("displayName")
        self.created.append(name)
        if self.lost_creates:
            self.lost_creates -= 1
            return web.json_response(
                {"error": {"code": 504, "message": "injected gateway timeout", "status": "DEADLINE_EXCEEDED"}}, status=504
            )
        return web.json_response({"name": name, "metadata": {"state": "BATCH_STATE_PENDING", "displayName": batch.get("displayName")}})

    async def _batch_list(self, request: web.Request) -> web.StreamResponse:
        """The jobs, newest first, a page of `pageSize` after the page token (an offset here)."""
        newest = self.created[::-1]
        start, size = int(request.query.get("pageToken") or 0), int(request.query.get("pageSize", "50"))
        page = [
            {"name": name, "metadata": {"displayName": self.jobs[name]["display_name"], "state": self.jobs[name]["state"]}}
            for name in newest[start : start + size]
        ]
        more = {"nextPageToken": str(start + size)} if start + size < len(newest) else {}
        return web.json_response({"operations": page, **more})

    async def _batch_get(self, request: web.Request) -> web.StreamResponse:
        name = f"batches/{request.match_info['name']}"
        job = self.jobs[name]
        if job["state"] == "BATCH_STATE_PENDING" and not self.hold:
            job["state"] = self.outcomes.pop(0) if self.outcomes else "BATCH_STATE_SUCCEEDED"
            if job["state"] == "BATCH_STATE_SUCCEEDED":
                job["output"] = self._run(name, job)
        metadata = {"state": job["state"], **({"output": job["output"]} if "output" in job else {})}
        failed = {"error": {"code": 3, "message": "the input file is not valid JSONL"}} if job["state"] == "BATCH_STATE_FAILED" else {}
        return web.json_response({"name": name, "metadata": metadata, **failed})

    def _run(self, name: str, job: dict[str, Any]) -> dict[str, Any]:
        """The job's output: inline responses for inline requests, a result file for an uploaded one."""
        source = job["input"]
        if "fileName" in source:
            lines = [json.loads(text) for text in self.files[source["fileName"]].decode().splitlines()]
            answered = [{"key": line["key"], **self._answer_line(line["key"], line["request"])} for line in lines]
            output = f"files/out-{name.rsplit('/', 1)[-1]}"
            self.files[output] = "".join(json.dumps(line) + "\n" for line in answered).encode()
            return {"responsesFile": output}
        requests = source["requests"]["requests"]
        answered = [{"metadata": item["metadata"], **self._answer_line(item["metadata"]["key"], item["request"])} for item in requests]
        return {"inlinedResponses": {"inlinedResponses": answered}}

    def _answer_line(self, key: str, request: dict[str, Any]) -> dict[str, Any]:
        error = self.line_error.pop(key, None)
        return {"error": error} if error else {"response": self.generated(request)}

    async def _batch_cancel(self, request: web.Request) -> web.StreamResponse:
        name = f"batches/{request.match_info['name']}"
        self.jobs[name]["state"] = "BATCH_STATE_CANCELLED"
        self.cancelled.append(name)
        return web.json_response({})

    async def _upload_start(self, request: web.Request) -> web.StreamResponse:
        session = str(len(self.uploads) + 1)
        self.uploads[session] = bytearray()
        return web.json_response({}, headers={"X-Goog-Upload-URL": f"{self.base_url}/upload-session/{session}"})

    async def _upload_chunk(self, request: web.Request) -> web.StreamResponse:
        session = request.match_info["name"]
        self.uploads[session] += await request.read()
        if "finalize" not in request.headers.get("X-Goog-Upload-Command", ""):
            return web.json_response({}, headers={"X-Goog-Upload-Status": "active"})
        name = f"files/upload-{session}"
        self.files[name] = bytes(self.uploads[session])
        file = {"name": name, "mimeType": "jsonl", "sizeBytes": str(len(self.files[name]))}
        return web.json_response({"file": file}, headers={"X-Goog-Upload-Status": "final"})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.files[f"files/{request.match_info['name']}"])

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
