"""The gemini backend's batch client: a step's requests as Gemini batch-mode jobs through the SDK
(`batches.create`, `get`, `list`, `cancel`; `files.upload` and `download` for large ones), with the client's request
and answer handling.

Each batch file line is `{"custom_id", "request": InlinedRequest}` (the SDK's own request shape, as JSON; its metadata
`key` is the custom_id). A file of at most INLINE_BYTES is sent inline, within the create call (Gemini takes 20 MB
so); a larger one is written in the API's file form (`{"key", "request"}`, each request by the SDK's own conversion)
and uploaded through the Files API. Either way the id
`upload` returns is journaled, so a run killed before `create` re-attaches: an inline id names the file on disk. A job's
display name carries a digest of that id, by which a create whose answer was lost finds its job (`batch_of`).
"""

from __future__ import annotations

from collections.abc import Awaitable
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

from google.genai import _common, errors, types
from google.genai.batches import _InlinedRequest_to_mldev
import httpx2

from chainette.batch import BatchStatus
from chainette.client import Answer, Request
from chainette.errors import BackendError, RetryableError, RowError
from chainette_gemini.client import GeminiClient
from chainette_gemini.wire import contents_of, parse_response

INLINE_BYTES = 19 * 1024 * 1024  # Gemini takes inline batches of up to 20 MB per request; leave room for the envelope
MAX_BYTES = 2 * 1024 * 1024 * 1024  # the Files API's limit per file
MAX_REQUESTS = 50_000
INLINE = "inline:"
PAGE_SIZE = 100  # jobs per page of the batches list
LISTED_PAGES = 10  # how many pages `batch_of` looks through
STATES = {
    "JOB_STATE_UNSPECIFIED": "validating",
    "JOB_STATE_QUEUED": "validating",
    "JOB_STATE_PENDING": "validating",
    "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_PAUSED": "in_progress",
    "JOB_STATE_UPDATING": "in_progress",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLING": "cancelling",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
# google.rpc codes (and HTTP statuses) of a line that may succeed when asked again: deadline, exhausted, internal, unavailable.
TRANSIENT = frozenset({4, 8, 13, 14, 429, 500, 503, 504})
T = TypeVar("T")


class GeminiBatchClient(GeminiClient):
    """Batches for one engine: each line asks what `complete` would send."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES
    detached = True

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        system, contents = contents_of(request.messages)
        config = self.config(request, system).model_copy(update={"http_options": None})  # extra body keys: online only
        inlined = types.InlinedRequest(contents=contents, config=config, metadata={"key": custom_id})
        return {"custom_id": custom_id, "request": inlined.model_dump(mode="json", exclude_none=True)}

    async def upload(self, path: Path) -> str:
        if path.stat().st_size <= INLINE_BYTES:
            return f"{INLINE}{path.resolve()}"
        converted = path.with_suffix(".upload.jsonl")
        with open(path, encoding="utf-8") as lines, open(converted, "w", encoding="utf-8") as out:
            for text in lines:
                line = json.loads(text)
                out.write(json.dumps({"key": line["custom_id"], "request": self._wire(line["request"])}) + "\n")
        config = types.UploadFileConfig(mime_type="jsonl", display_name=path.name)
        try:
            uploaded = await self._sdk(self._client.aio.files.upload(file=converted, config=config))
        finally:
            converted.unlink()
        return str(uploaded.name)

    def _wire(self, request: dict[str, Any]) -> dict[str, Any]:
        """A line's request in the API's own JSON form (GenerateContentRequest), by the SDK's conversion."""
        inlined = types.InlinedRequest.model_validate_json(json.dumps(request))
        wire = _InlinedRequest_to_mldev(self._client._api_client, inlined)["request"]
        converted: dict[str, Any] = _common.encode_unserializable_types(_common.convert_to_dict(wire))
        return converted

    async def create(self, file_id: str) -> str:
        source: str | list[types.InlinedRequest] = file_id
        if file_id.startswith(INLINE):
            text = Path(file_id.removeprefix(INLINE)).read_text(encoding="utf-8")
            source = [
                types.InlinedRequest.model_validate_json(json.dumps(json.loads(line)["request"])) for line in text.splitlines() if line
            ]
        config = types.CreateBatchJobConfig(display_name=self._display_name(file_id))
        job = await self._sdk(self._client.aio.batches.create(model=self.model, src=source, config=config))
        return str(job.name)

    async def batch_of(self, file_id: str) -> str | None:
        """The job created from `file_id`: the one bearing its display name, among the LISTED_PAGES first pages of jobs."""
        name = self._display_name(file_id)
        pager = await self._sdk(self._client.aio.batches.list(config=types.ListBatchJobsConfig(page_size=PAGE_SIZE)))
        found = None
        for page in range(LISTED_PAGES):
            if page:
                await self._sdk(pager.next_page())
            found = next((str(job.name) for job in pager.page if job.display_name == name), None)
            if found is not None or not pager.config.get("page_token"):
                break
        return found

    def _display_name(self, file_id: str) -> str:
        """The name a job created from `file_id` bears, which `batch_of` finds it by: the engine, and a digest of the file's
        id (an inline one's with the time its file was written, since a later run may write it again at the same path)."""
        identity = file_id
        if file_id.startswith(INLINE):
            identity += f" {Path(file_id.removeprefix(INLINE)).stat().st_mtime_ns}"
        return f"chainette {self.engine} {hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    async def status(self, batch_id: str) -> BatchStatus:
        job = await self._sdk(self._client.aio.batches.get(name=batch_id))
        state = STATES.get(job.state.value if job.state is not None else "", "in_progress")
        detail = self._scrub(job.error.message or "") if job.error is not None else ""
        finished = state in ("completed", "failed", "expired", "cancelled")
        return BatchStatus(state, detail=detail, result_files=(batch_id,) if finished else ())

    async def results(self, status: BatchStatus) -> list[tuple[str, Answer | BackendError]]:
        answered: list[tuple[str, Answer | BackendError]] = []
        for batch_id in status.result_files:
            job = await self._sdk(self._client.aio.batches.get(name=batch_id))
            destination = job.dest
            if destination is None:
                continue
            for inlined in destination.inlined_responses or []:
                key = str((inlined.metadata or {}).get("key"))
                answered.append((key, self._outcome(inlined.response, inlined.error)))
            if destination.file_name:
                content = await self._sdk(self._client.aio.files.download(file=destination.file_name))
                answered += [self._file_line(json.loads(text)) for text in content.decode("utf-8").splitlines() if text.strip()]
        return answered

    def _file_line(self, line: dict[str, Any]) -> tuple[str, Answer | BackendError]:
        """A line of a batch's result file: `{"key", "response"}` or `{"key", "error"}`."""
        response = types.GenerateContentResponse.model_validate(line["response"]) if isinstance(line.get("response"), dict) else None
        error = types.JobError.model_validate(line["error"]) if isinstance(line.get("error"), dict) else None
        return str(line.get("key")), self._outcome(response, error)

    def _outcome(self, response: types.GenerateContentResponse | None, error: types.JobError | None) -> Answer | BackendError:
        """One answered line: its Answer, or the error it got (transient codes retryable, the others row errors)."""
        if error is not None or response is None:
            code = error.code if error is not None else None
            message = self._scrub(f"engine '{self.engine}': the batch line failed: {(error.message if error else None) or 'no response'}")
            return (
                RetryableError(message, kind="batch_line") if code in TRANSIENT or code is None else RowError(message, kind=f"batch_{code}")
            )
        try:
            return parse_response(response, engine=self.engine)
        except BackendError as exc:
            return exc

    async def cancel(self, batch_id: str) -> None:
        await self._sdk(self._client.aio.batches.cancel(name=batch_id))

    async def _sdk(self, call: Awaitable[T]) -> T:
        """What an SDK call returns; its failure as the chainette BackendError `complete` would raise."""
        try:
            return await call
        except (errors.APIError, errors.UnknownApiResponseError, httpx2.HTTPError) as exc:
            raise self._classify(exc) from None
