"""Batch jobs: the contract a backend implements to answer a step's requests as offline batches (the OpenAI Batch
API, say), the ids that carry a row through them, and the journal that lets a run re-attach to them after a kill.

A batch line's `custom_id` is `KIND-SAMPLE-ROW_ID`: KIND `q` for a row's question, `r` for a repair re-ask of
candidate SAMPLE. The journal (one JSON object per line, each written and fsynced before the step goes on) records
each chunk of lines when written, its uploaded file's id, its batch's id, its last known state, and its end.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from chainette.client import Answer, Request
from chainette.errors import BackendError

FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchStatus:
    """What the provider says of one batch: its `state` (validating, in_progress, finalizing, completed, failed,
    expired, cancelling, cancelled), its request counts, why it failed, and the files its results are in."""

    state: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    detail: str = ""
    result_files: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Nothing more will change: the results it has (maybe none) can be read."""
        return self.state in FINISHED


@runtime_checkable
class BatchClient(Protocol):
    """What `make_batch_client` returns. Calls come from the event loop; failures raise `BackendError`s."""

    max_requests: int  # lines per batch file
    max_bytes: int  # bytes per batch file
    detached: bool  # whether a batch goes on without chainette (the OpenAI Batch API's) or ends with it (a local process)

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        """The batch file line (a JSON object) asking `request` under `custom_id`."""
        ...

    async def upload(self, path: Path) -> str:
        """Upload the batch file at `path`; return its file id."""
        ...

    async def create(self, file_id: str) -> str:
        """Start the batch of the uploaded file `file_id`; return the batch's id."""
        ...

    async def status(self, batch_id: str) -> BatchStatus:
        """The batch's state and counts now."""
        ...

    async def results(self, status: BatchStatus) -> list[tuple[str, Answer | BackendError]]:
        """Each answered line of a finished batch: its custom_id and its answer, or the error it got."""
        ...

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to stop the batch (what it answered already stays readable)."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, after the step's last call."""
        ...


@runtime_checkable
class FindsBatches(Protocol):
    """What a batch client may add: finding the batch a create made when its answer was lost (a timeout, a dropped
    connection, a kill before the journal recorded it), so that a file is never run, and billed, twice."""

    async def batch_of(self, file_id: str) -> str | None:
        """The id of a batch already created from the uploaded file `file_id`, or None when there is none."""
        ...


def custom_id(kind: str, sample: int, row_id: str) -> str:
    return f"{kind}-{sample}-{row_id}"


def parse_custom_id(value: str) -> tuple[str, int, str]:
    """(kind, sample, row_id) of a custom_id made by `custom_id`; ValueError for anything else."""
    kind, sample, row_id = value.split("-", 2)
    if kind not in ("q", "r"):
        raise ValueError(f"not a chainette custom_id: {value!r}")
    return kind, int(sample), row_id


@dataclass
class Chunk:
    """One batch file of a step, as the journal knows it."""

    name: str
    round: int
    path: Path
    lines: int
    file_id: str | None = None
    batch_id: str | None = None
    state: str = "written"
    done: bool = False


class BatchJournal:
    """The journal of one step's batches (see the module docstring), read back whole when opened."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "journal.jsonl"
        self.chunks: dict[str, Chunk] = {}
        folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            for text in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self._apply(json.loads(text))
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: the state before it holds

    def _apply(self, record: dict[str, Any]) -> None:
        name = record["chunk"]
        if "path" in record:
            self.chunks[name] = Chunk(name, record["round"], self.folder / record["path"], record["lines"])
            return
        chunk = self.chunks[name]
        for key in ("file_id", "batch_id", "state", "done"):
            if key in record:
                setattr(chunk, key, record[key])

    def record(self, chunk: Chunk, **change: Any) -> None:
        """Write `change` (file_id, batch_id, state, done) to the journal, then apply it to `chunk`."""
        self._append({"chunk": chunk.name, **change})
        for key, value in change.items():
            setattr(chunk, key, value)

    def _append(self, record: dict[str, Any]) -> None:
        """Add `record` to the journal, on disk (fsynced) before this returns."""
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def add(self, round: int, written: Path, lines: int) -> Chunk:
        """Make the batch file `written` (`lines` JSON lines) a new chunk's, under its name, then journal it."""
        name = f"{round:03d}-{len(self.chunks):05d}"
        path = self.folder / f"{name}.jsonl"
        os.replace(written, path)
        self._append({"chunk": name, "path": path.name, "round": round, "lines": lines})
        chunk = self.chunks[name] = Chunk(name, round, path, lines)
        return chunk

    def writer(self, round: int, client: BatchClient) -> ChunkWriter:
        """A ChunkWriter of round `round`, within `client`'s limits per file."""
        return ChunkWriter(self, round, client.max_requests, client.max_bytes)

    def open_chunks(self) -> list[Chunk]:
        return [chunk for chunk in self.chunks.values() if not chunk.done]

    @property
    def last_round(self) -> int:
        return max((chunk.round for chunk in self.chunks.values()), default=-1)


class ChunkWriter:
    """Writes lines into a journal's batch files of one round as they come, straight to disk (a line with its media
    holds their bytes: none stays in memory), starting a new file at `max_requests` lines or `max_bytes` bytes (a
    longer line goes alone). A file becomes a chunk once it is full or closed; `chunks` lists those written."""

    def __init__(self, journal: BatchJournal, round: int, max_requests: int, max_bytes: int):
        self.journal, self.round = journal, round
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.part = journal.folder / f"{round:03d}-next.jsonl.part"  # the file being written, not journaled yet
        self.file: BinaryIO | None = None
        self.lines = 0
        self.size = 0
        self.chunks: list[Chunk] = []

    def write(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            encoded = json.dumps(line).encode() + b"\n"
            if self.lines and (self.lines >= self.max_requests or self.size + len(encoded) > self.max_bytes):
                self._flush()
            if self.file is None:
                self.file = open(self.part, "wb")  # noqa: SIM115 (open across `write` calls, closed by `_flush`)
            self.file.write(encoded)
            self.lines += 1
            self.size += len(encoded)

    def close(self) -> None:
        if self.lines:
            self._flush()

    def _flush(self) -> None:
        assert self.file is not None, "a file with lines is open"
        self.file.close()
        self.file = None
        self.chunks.append(self.journal.add(self.round, self.part, self.lines))
        self.lines, self.size = 0, 0


def row_ids_of(chunk: Chunk) -> set[str]:
    """The rows a chunk's batch file asks about."""
    ids = set()
    with open(chunk.path, encoding="utf-8") as lines:
        for text in lines:
            ids.add(parse_custom_id(json.loads(text)["custom_id"])[2])
    return ids
