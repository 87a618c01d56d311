"""The fake server's OpenAI Files and Batches endpoints: upload a batch file, create a batch, poll it, read its
output and error files, cancel it. A batch finishes after `polls_to_finish` polls, answered by the server's chat
logic, unless told otherwise: `outcome` (completed, expired with half the lines answered (rounded up), failed, cancelled),
`line_status` (an HTTP status for some lines), `failed_uploads` (uploads refused with a 500), `lost_creates` (batches
created whose answer is a 504, as when a gateway times out). Batches are listed newest first, as OpenAI lists them."""

from __future__ import annotations

from collections.abc import Callable
import itertools
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from chainette.testing.server import FakeServer


class FakeBatches:
    """The Files and Batches state of one FakeServer; `created` lists every batch id created, in order, and `listed`
    counts the pages of batches listed."""

    def __init__(self, server: FakeServer):
        self.server = server
        self.files: dict[str, bytes] = {}
        self.uploaded_at: dict[str, int] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.cancelled: list[str] = []
        self.listed = 0
        self.polls_to_finish = 2
        self.outcome = "completed"
        self.line_status: Callable[[str], int | None] = lambda custom_id: None
        self.failed_uploads = 0
        self.lost_creates = 0
        self._ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/files", self._upload),
            web.get("/v1/files/{id}/content", self._content),
            web.post("/v1/batches", self._create),
            web.get("/v1/batches", self._list),
            web.get("/v1/files/{id}", self._file),
            web.get("/v1/batches/{id}", self._retrieve),
            web.post("/v1/batches/{id}/cancel", self._cancel),
        ]

    async def _upload(self, request: web.Request) -> web.Response:
        if not self.server._authorized(request):
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if self.failed_uploads:
            self.failed_uploads -= 1
            return web.json_response({"error": {"message": "injected upload failure", "type": "server_error"}}, status=500)
        form = await request.post()
        upload = form["file"]
        content = upload.file.read() if hasattr(upload, "file") else str(upload).encode()
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = content
        self.uploaded_at[file_id] = int(time.time())
        return web.json_response(self._file_view(file_id))

    async def _content(self, request: web.Request) -> web.Response:
        content = self.files.get(request.match_info["id"])
        if content is None:
            return web.json_response({"error": {"message": "No such file"}}, status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "No such file", "type": "invalid_request_error"}}, status=400)
        batch_id = f"batch_{next(self._ids)}"
        lines = self.files[body["input_file_id"]].decode().splitlines()
        if any(json.loads(line)["url"] != body.get("endpoint") for line in lines):
            message = f"The batch's lines must all be for its endpoint {body.get('endpoint')}"
            return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)
        self.batches[batch_id] = {
            "id": batch_id,
            "endpoint": body.get("endpoint"),
            "input_file_id": body["input_file_id"],
            "status": "validating",
            "created_at": int(time.time()),
            "polls": 0,
            "total": len(lines),
        }
        self.created.append(batch_id)
        if self.lost_creates:
            self.lost_creates -= 1
            return web.json_response({"error": {"message": "injected gateway timeout", "type": "server_error"}}, status=504)
        return web.json_response(self._view(batch_id))

    async def _list(self, request: web.Request) -> web.Response:
        """A page of the batches, newest first, after the batch `after` (the Batches API's cursor), `limit` of them."""
        self.listed += 1
        newest = self.created[::-1]
        after = request.query.get("after")
        start = newest.index(after) + 1 if after in newest else 0
        page = newest[start : start + int(request.query.get("limit", "20"))]
        more = start + len(page) < len(newest)
        body = {"object": "list", "data": [self._view(batch_id) for batch_id in page], "has_more": more}
        return web.json_response({**body, "first_id": page[0] if page else None, "last_id": page[-1] if page else None})

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": "No such file"}}, status=404)
        return web.json_response(self._file_view(file_id))

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        if batch_id not in self.batches:
            return web.json_response({"error": {"message": "No such batch"}}, status=404)
        batch = self.batches[batch_id]
        batch["polls"] += 1
        if batch["status"] in ("validating", "in_progress") and batch["polls"] >= self.polls_to_finish:
            self._finish(batch, self.outcome)
        elif batch["status"] == "validating":
            batch["status"] = "in_progress"
        return web.json_response(self._view(batch_id))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        self.cancelled.append(batch_id)
        self._finish(self.batches[batch_id], "cancelled")
        return web.json_response(self._view(batch_id))

    def _finish(self, batch: dict[str, Any], outcome: str) -> None:
        """Answer the batch's lines (all of them, half when it expires, none when it failed or was cancelled)."""
        batch["status"] = outcome
        if outcome == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "injected validation failure"}]}
            return
        lines = [json.loads(text) for text in self.files[batch["input_file_id"]].decode().splitlines()]
        answered = lines if outcome == "completed" else lines[: (len(lines) + 1) // 2] if outcome == "expired" else []
        outputs, errors = [], []
        for line in answered:
            status = self.line_status(line["custom_id"])
            if status is None:
                answer = self.server.response if line["url"] == "/v1/responses" else self.server.completion
                outputs.append(self._result(line, 200, answer(line["body"])))
            else:
                errors.append(self._result(line, status, {"error": {"message": f"injected line failure {status}", "type": "server_error"}}))
        errors += [
            {
                "id": f"batch_req_{next(self._ids)}",
                "custom_id": line["custom_id"],
                "response": None,
                "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."},
            }
            for line in lines[len(answered) :]
            if outcome == "expired"
        ]
        batch["done"], batch["failed"] = len(outputs), len(errors)
        batch["output_file_id"] = self._store(outputs)
        batch["error_file_id"] = self._store(errors)

    def _result(self, line: dict[str, Any], status: int, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"batch_req_{next(self._ids)}",
            "custom_id": line["custom_id"],
            "response": {"status_code": status, "request_id": "req", "body": body},
            "error": None,
        }

    def _store(self, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        self.uploaded_at[file_id] = int(time.time())
        return file_id

    def _file_view(self, file_id: str) -> dict[str, Any]:
        """The uploaded file as the Files API shows it."""
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(self.files[file_id]),
            "created_at": self.uploaded_at[file_id],
            "filename": "batch.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def _view(self, batch_id: str) -> dict[str, Any]:
        """The batch as the Batches API shows it."""
        batch = self.batches[batch_id]
        return {
            "id": batch_id,
            "object": "batch",
            "endpoint": batch["endpoint"],
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": batch["status"],
            "created_at": batch["created_at"],
            "output_file_id": batch.get("output_file_id"),
            "error_file_id": batch.get("error_file_id"),
            "errors": batch.get("errors"),
            "request_counts": {"total": batch["total"], "completed": batch.get("done", 0), "failed": batch.get("failed", 0)},
        }
