"""The openai backend's batch client: a step's requests as OpenAI Batch API jobs (files upload, batches create,
retrieve, list and cancel, output and error files), through the SDK, with the client's request body and error handling."""

from __future__ import annotations

from collections.abc import Awaitable
import json
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import openai

from chainette.batch import BatchStatus
from chainette.client import Answer, Request
from chainette.errors import BackendError
from chainette.openai_format import parse_batch_result
from chainette_openai.client import OpenAIClient

ENDPOINTS: Final[dict[str, Literal["/v1/chat/completions", "/v1/responses"]]] = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
}
MAX_REQUESTS = 50_000  # the Batch API's limits per input file
MAX_BYTES = 200 * 1024 * 1024
LISTED = 100  # batches per page of the Batches API's list, its most
T = TypeVar("T")


class OpenAIBatchClient(OpenAIClient):
    """Batches for one engine, on its API's endpoint: each line is the body `complete` would send."""

    max_requests = MAX_REQUESTS
    detached = True
    max_bytes = MAX_BYTES

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        kwargs, extra_body = self._arguments(request)
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINTS[self.api], "body": {**kwargs, **extra_body}}

    async def upload(self, path: Path) -> str:
        return (await self._sdk(self._client.files.create(file=(path.name, path.read_bytes()), purpose="batch"))).id

    async def create(self, file_id: str) -> str:
        return (
            await self._sdk(self._client.batches.create(input_file_id=file_id, endpoint=ENDPOINTS[self.api], completion_window="24h"))
        ).id

    async def batch_of(self, file_id: str) -> str | None:
        """The batch created from `file_id`: the batches are listed newest first, down to those older than the file."""
        uploaded = (await self._sdk(self._client.files.retrieve(file_id))).created_at
        page = await self._sdk(self._client.batches.list(limit=LISTED))
        while True:
            found = next((batch.id for batch in page.data if batch.input_file_id == file_id), None)
            if found is not None or not page.data or page.data[-1].created_at < uploaded or not page.has_next_page():
                return found
            page = await self._sdk(page.get_next_page())

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._sdk(self._client.batches.retrieve(batch_id))
        counts = batch.request_counts
        problems = "; ".join(str(error.message) for error in (batch.errors.data or [])) if batch.errors else ""
        files = tuple(file_id for file_id in (batch.output_file_id, batch.error_file_id) if file_id)
        return BatchStatus(
            batch.status,
            total=counts.total if counts else 0,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            detail=self._scrub(problems),
            result_files=files,
        )

    async def results(self, status: BatchStatus) -> list[tuple[str, Answer | BackendError]]:
        answered = []
        for file_id in status.result_files:
            content = await self._sdk(self._client.files.content(file_id))
            answered += [
                parse_batch_result(json.loads(text), engine=self.engine, parse=self.parse)
                for text in content.text.splitlines()
                if text.strip()
            ]
        return answered

    async def cancel(self, batch_id: str) -> None:
        await self._sdk(self._client.batches.cancel(batch_id))

    async def _sdk(self, call: Awaitable[T]) -> T:
        """What an SDK call returns; its failure as the chainette BackendError `complete` would raise."""
        try:
            return await call
        except openai.APIError as exc:
            raise self._classify(exc) from None
