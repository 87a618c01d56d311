"""The anthropic backend's batch client: a step's requests as Message Batches (`messages.batches` create, retrieve,
results and cancel), through the SDK, with the client's request parameters and error handling.

Message Batches take the requests in the create call itself, so `upload` only names the chunk's file, which `create`
reads. A batch request's custom_id must match `^[a-zA-Z0-9_-]{1,64}$`: a chainette id outside it (a row id of the
user's own with other characters, or too long) is sent as a digest of it, and the digests of a batch are kept beside
the run (`anthropic-batch-ids/BATCH.json` in its output directory) so that its results are matched back after a kill.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
import hashlib
import json
import os
from pathlib import Path
import re
from typing import Any, TypeVar

import anthropic

from chainette.batch import BatchStatus
from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import BackendError, RetryableError
from chainette_anthropic.client import AnthropicClient, api_error
from chainette_anthropic.options import AnthropicOptions

MAX_REQUESTS = 100_000  # Message Batches' limits per batch: 100,000 requests, 256 MB
MAX_BYTES = 248 * 1024 * 1024  # of batch file: room for the create call's JSON and custom_ids made longer by a digest
WIRE_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
IDS_FOLDER = "anthropic-batch-ids"
T = TypeVar("T")

# The HTTP status of each error type an errored batch request reports (the API's errors page), for `api_error`.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def wire_id(custom_id: str) -> str:
    """The custom_id a batch request is sent under: chainette's own when the API takes it, else `d-` and its digest."""
    if WIRE_ID.fullmatch(custom_id):
        return custom_id
    return "d-" + hashlib.sha256(custom_id.encode()).hexdigest()[:60]


class AnthropicBatchClient(AnthropicClient):
    """Message Batches for one engine: each request's params are what `complete` would send."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES
    detached = True

    def __init__(self, config: EngineConfig[AnthropicOptions], run_dir: Path | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self._ids_folder = run_dir / IDS_FOLDER if run_dir is not None else None
        self._renamed: dict[str, dict[str, str]] = {}  # batch id -> {wire id: chainette custom_id}

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        kwargs, extra_body = self.arguments(request)
        return {"custom_id": custom_id, "params": {**kwargs, **extra_body}}

    async def upload(self, path: Path) -> str:
        return str(path)

    async def create(self, file_id: str) -> str:
        with open(file_id, encoding="utf-8") as lines:
            requests = [json.loads(text) for text in lines if text.strip()]
        renamed = {wire_id(r["custom_id"]): r["custom_id"] for r in requests if wire_id(r["custom_id"]) != r["custom_id"]}
        sent = [{"custom_id": wire_id(r["custom_id"]), "params": r["params"]} for r in requests]
        batch = await self._sdk(self._client.messages.batches.create(requests=sent))  # type: ignore[arg-type]
        if renamed:
            self._keep(batch.id, renamed)
        return batch.id

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._sdk(self._client.messages.batches.retrieve(batch_id))
        counts = batch.request_counts
        if batch.processing_status == "ended":
            state = "cancelled" if counts.canceled and not counts.succeeded + counts.errored else "completed"
        else:
            state = {"canceling": "cancelling"}.get(batch.processing_status, batch.processing_status)
        return BatchStatus(
            state,
            total=counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired,
            completed=counts.succeeded,
            failed=counts.errored + counts.expired,
            result_files=(batch.id,) if batch.results_url else (),
        )

    async def results(self, status: BatchStatus) -> list[tuple[str, Answer | BackendError]]:
        answered = []
        for batch_id in status.result_files:
            renamed = self._renames(batch_id)
            decoder = await self._sdk(self._client.messages.batches.results(batch_id))
            async for item in decoder:
                key, outcome = self.result(item.to_dict(warnings=False))
                answered.append((renamed.get(key, key), outcome))
        return answered

    def result(self, item: Mapping[str, Any]) -> tuple[str, Answer | BackendError]:
        """One line of a batch's results: its custom_id, and the Answer in its message or the error it got (a request
        the batch did not run, canceled or expired, is retryable)."""
        key = str(item.get("custom_id"))
        result = item.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            try:
                return key, self.read(result.get("message"))
            except BackendError as exc:
                return key, exc
        if kind == "errored":
            error = (result.get("error") or {}).get("error") or {}
            error_type = str(error.get("type"))
            message = self.scrub(str(error.get("message") or error_type))
            return key, api_error(ERROR_STATUSES.get(error_type, 500), message, engine=self.engine, code=error_type)
        return key, RetryableError(f"engine '{self.engine}': the batch did not run this request ({kind})", kind=f"batch_{kind}")

    async def cancel(self, batch_id: str) -> None:
        await self._sdk(self._client.messages.batches.cancel(batch_id))

    def _keep(self, batch_id: str, renamed: dict[str, str]) -> None:
        """Remember a batch's renamed ids, on disk too when the run has a folder."""
        self._renamed[batch_id] = renamed
        if self._ids_folder is not None:
            self._ids_folder.mkdir(parents=True, exist_ok=True)
            path = self._ids_folder / f"{batch_id}.json"
            path.write_text(json.dumps(renamed), encoding="utf-8")
            with open(path, encoding="utf-8") as written:
                os.fsync(written.fileno())

    def _renames(self, batch_id: str) -> dict[str, str]:
        if batch_id not in self._renamed and self._ids_folder is not None:
            path = self._ids_folder / f"{batch_id}.json"
            self._renamed[batch_id] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return self._renamed.get(batch_id, {})

    async def _sdk(self, call: Awaitable[T]) -> T:
        """What an SDK call returns; its failure as the chainette BackendError `complete` would raise."""
        try:
            return await call
        except anthropic.APIError as exc:
            raise self.classify(exc) from None
