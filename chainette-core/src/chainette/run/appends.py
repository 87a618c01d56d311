"""A run's append files and their writer, atomic whole-file writes, and reading the JSONL files back.

Crash consistency rests on one invariant, kept by construction rather than by buffer sizes:

    a row's commit (its line in its node's frontier, or in the errors file) reaches the OS only
    after every output line it covers.

All appends of a run wait in memory (`Writer`); once per event-loop iteration they are written
out with plain `write` calls, every output file first, then every commit log. A node's output
lines and its commits are appended in the same order, so after a SIGKILL at any instant the
committed rows' outputs are exactly the first lines of the node's output folder; recovery
(chainette.execution.recovery) cuts a half-written last line off every log and truncates the outputs
to the lines the commits cover.
After each flush the writer tells its `flushed` callbacks: that is when the rows just committed are handed to
the next nodes (chainette.execution.feed), so a node's commit always reaches the OS after the commit of the row
it came from. Files written whole (markers, metadata) go to a temporary name and are renamed.
A run holds its directory's lock (chainette.runlock) from the moment it opens it until it ends, so no other
process writes into it meanwhile.

A SIGKILL or a crash of the process needs no fsync: what was written is in the kernel's page
cache. Surviving a power loss or a kernel crash needs `durable=True`, which fsyncs the outputs
before writing the commits and the commits after (two fsyncs per loop iteration that wrote rows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
import errno
import os
from pathlib import Path
from typing import Any

import orjson

from chainette import parquet
from chainette.errors import ChainetteError
from chainette.frontier import Commit

ROWS_PER_FILE = 100_000
MAX_PENDING = 1 << 20


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One JSONL line."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write every byte of `data` to the file descriptor (the one place a run's appends reach the OS). Its view of
    `data` is released however the write ends: a failed write's traceback does not keep a buffer from growing."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])


class AppendFile:
    """A file the run appends to; bytes wait in memory until its writer writes them out, copied into one buffer as they
    come (holding each line's own bytes object until the write grew the heap by their sum and gave it back at every
    flush: page faults that took about a sixth of a run's time)."""

    def __init__(self, writer: Writer, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self._fd).st_size  # the bytes written to the OS so far
        self._pending = bytearray()

    def append(self, data: bytes) -> None:
        self._pending += data
        self.writer.schedule(len(data))

    def write_out(self) -> None:
        if self._pending and self._fd is not None:
            write_all(self._fd, self._pending)
            self.size += len(self._pending)
            self._pending = bytearray()

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Write out every pending byte of the run (in order), then close this file."""
        if self._fd is None:
            return
        self.writer.flush()
        os.close(self._fd)
        self._fd = None
        self.writer.forget(self)


class Writer:
    """Writes a run's appends once per event-loop iteration: every output file, then every commit log (in the order
    they were opened), then tells each `flushed` callback (how the rows just committed are handed on)."""

    def __init__(self, *, durable: bool = False):
        self.durable = durable
        self.flushed: list[Callable[[], None]] = []
        self.flushes = 0  # flushes begun: what was appended before flush number N is written once it ends
        self._outputs: list[AppendFile] = []
        self._commits: list[AppendFile] = []
        self._scheduled = False
        self._pending = 0

    def open(self, path: Path, *, commit: bool) -> AppendFile:
        """Open `path` for appending; a commit log's bytes are written after every output's."""
        try:
            file = AppendFile(self, path)
        except OSError as exc:
            raise write_error(exc) from None
        (self._commits if commit else self._outputs).append(file)
        if self.durable:
            _sync_directory(path.parent)
        return file

    def schedule(self, size: int) -> None:
        """Note `size` more bytes waiting; flush at the end of this loop iteration (with no loop running, at the next
        `flush` or close), or now when more than MAX_PENDING bytes wait. Any moment is safe: a flush always writes
        outputs before commits."""
        self._pending += size
        if self._pending > MAX_PENDING:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                return
            self._scheduled = True

    def flush(self) -> None:
        self.flushes += 1
        self._scheduled = False
        self._pending = 0
        try:
            for group in (self._outputs, self._commits):
                for file in group:
                    file.write_out()
                if self.durable:
                    for file in group:
                        file.sync()
        except OSError as exc:
            raise write_error(exc) from None
        for callback in self.flushed:
            callback()

    def forget(self, file: AppendFile) -> None:
        for group in (self._outputs, self._commits):
            if file in group:
                group.remove(file)


class LineFile:
    """A JSONL file of a run (a frontier or the errors file), appended to through the writer."""

    def __init__(self, writer: Writer, path: Path, *, commit: bool = True):
        self.path = path
        self._file = writer.open(path, commit=commit)

    @property
    def size(self) -> int:
        """The bytes written to the OS so far."""
        return self._file.size

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.append(encode_line(record))

    def commit(self, commit: Commit, line: bytes | None = None) -> int:
        """Append `commit`'s line (`line`, when it is encoded already); its length in bytes."""
        line = line if line is not None else commit.encode()
        self._file.append(line)
        return len(line)

    def append_lines(self, lines: bytes) -> None:
        """Append whole lines, encoded already."""
        self._file.append(lines)

    def close(self) -> None:
        self._file.close()


class OutputFolder:
    """A node's user-facing outputs: `000.jsonl`, rolling to `001.jsonl` every `rows_per_file` rows; `count` rows are there already."""

    def __init__(self, writer: Writer, folder: Path, count: int = 0, rows_per_file: int = ROWS_PER_FILE):
        self.writer = writer
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.count = count
        self._file: AppendFile | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        self.write_line(encode_line(record))

    def write_line(self, line: bytes) -> None:
        """Append one output line, encoded already (newline included)."""
        self._current().append(line)
        self.count += 1

    def write_lines(self, lines: list[bytes]) -> None:
        """Append output lines encoded already, each with its newline (a file at a time)."""
        start = 0
        while start < len(lines):
            file = self._current()
            chunk = lines[start : start + self.rows_per_file - self.count % self.rows_per_file]
            file.append(b"".join(chunk))
            self.count += len(chunk)
            start += len(chunk)

    def _current(self) -> AppendFile:
        """The file the next line goes to: a new one once `rows_per_file` lines fill the last."""
        if self._file is None or self.count % self.rows_per_file == 0:
            if self._file is not None:
                self._file.close()
            self._file = self.writer.open(self.folder / f"{self.count // self.rows_per_file:03d}.jsonl", commit=False)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def write_error(exc: OSError) -> ChainetteError:
    """The user's error for a failed write: disk full, or what the OS said."""
    if exc.errno == errno.ENOSPC:
        return ChainetteError("The disk is full: the run stopped. Free some space, then run the same command again to resume.")
    return ChainetteError(f"Cannot write the run's files: {exc.strerror} ({exc.filename or 'output directory'}).")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` whole: written to a temporary name, then renamed, so a crash leaves the old file or the new."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    temporary.replace(path)


def write_lines_atomically(path: Path, records: Iterable[bytes]) -> None:
    """Replace `path` by the lines `records` yields, through a temporary file (for derived frontiers)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk: list[bytes] = []
    try:
        for line in records:
            chunk.append(line)
            if len(chunk) >= 1024:
                write_all(fd, b"".join(chunk))
                chunk.clear()
        write_all(fd, b"".join(chunk))
    finally:
        os.close(fd)
    temporary.replace(path)


def _sync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of one JSONL file (nothing if it does not exist)."""
    if not path.exists():
        return
    with open(path, "rb") as file:
        for line in file:
            yield orjson.loads(line)


def output_files(folder: Path) -> list[Path]:
    """The numbered JSONL files of an output folder, in order."""
    return sorted(folder.glob("[0-9][0-9][0-9]*.jsonl"))


def read_folder(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of the numbered JSONL files in `folder`, file by file."""
    for path in output_files(folder):
        yield from read_lines(path)


def read_outputs(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of a user-facing output folder, whether its numbered files are JSONL or Parquet."""
    yield from read_folder(folder)
    for path in sorted(folder.glob("[0-9][0-9][0-9]*.parquet")):
        yield from parquet.read_rows(path)
