"""The run directory: its files and their write order, atomic whole-file writes, and the run's identity.

Crash consistency rests on one invariant, kept by construction rather than by buffer sizes:

    a row's commit (its line in its node's frontier, or in the errors file) reaches the OS only
    after every output line it covers.

All appends of a run wait in memory (`Writer`); once per event-loop iteration they are written
out with plain `write` calls, every output file first, then every commit log. A node's output
lines and its commits are appended in the same order, so after a SIGKILL at any instant the
committed rows' outputs are exactly the first lines of the node's output folder; recovery
(chainette.execution.recovery) cuts a half-written last line off every log and truncates the outputs
to the lines the commits cover.
Files written whole (derived frontiers, markers, metadata) go to a temporary name and are renamed.
A run holds its directory's lock (chainette.runlock) from the moment it opens it until it ends, so no other
process writes into it meanwhile.

A SIGKILL or a crash of the process needs no fsync: what was written is in the kernel's page
cache. Surviving a power loss or a kernel crash needs `durable=True`, which fsyncs the outputs
before writing the commits and the commits after (two fsyncs per loop iteration that wrote rows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
import errno
import json
import os
from pathlib import Path
import shutil
import sqlite3
from typing import Any, TypeVar

import orjson

from chainette import parquet
from chainette.errors import ChainetteError, ConfigError
from chainette.frontier import Commit
from chainette.runlock import RunLock

ROWS_PER_FILE = 100_000
MAX_PENDING = 1 << 20
OUTPUT_FORMATS = ("jsonl", "parquet")

# The entries a run directory holds besides its nodes' output folders. MANIFEST marks a folder as a run directory:
# --overwrite deletes nothing else. Backends write the logs of the servers they start in LOGS_DIR.
STATE_DIR = ".chainette"
MANIFEST = "manifest.json"
FLATTENED = "flattened"
ERRORS_FILE = "errors.jsonl"
GRAPH_FILE = "graph.json"
RUN_FILE = "run.json"
LOGS_DIR = "logs"
# A node id or join alias equal to one of these would clash with the run directory's own entry (ids are identifiers,
# so only the folders can clash; the files are listed too, so that a new entry cannot be forgotten).
RUN_DIR_ENTRIES = frozenset({STATE_DIR, FLATTENED, ERRORS_FILE, GRAPH_FILE, RUN_FILE, LOGS_DIR})


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One JSONL line."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to the file descriptor (the one place a run's appends reach the OS)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class AppendFile:
    """A file the run appends to; bytes wait in memory until its writer writes them out."""

    def __init__(self, writer: Writer, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending: list[bytes] = []

    def append(self, data: bytes) -> None:
        self._pending.append(data)
        self.writer.schedule(len(data))

    def write_out(self) -> None:
        if self._pending and self._fd is not None:
            write_all(self._fd, b"".join(self._pending))
            self._pending.clear()

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
    """Writes a run's appends once per event-loop iteration: every output file, then every commit log."""

    def __init__(self, *, durable: bool = False):
        self.durable = durable
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

    def forget(self, file: AppendFile) -> None:
        for group in (self._outputs, self._commits):
            if file in group:
                group.remove(file)


class LineFile:
    """A JSONL file of a run (a frontier or the errors file), appended to through the writer."""

    def __init__(self, writer: Writer, path: Path, *, commit: bool = True):
        self.path = path
        self._file = writer.open(path, commit=commit)

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.append(encode_line(record))

    def commit(self, commit: Commit) -> None:
        self._file.append(commit.encode())

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
        if self._file is None or self.count % self.rows_per_file == 0:
            self._roll()
        assert self._file is not None
        self._file.append(encode_line(record))
        self.count += 1

    def _roll(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self.writer.open(self.folder / f"{self.count // self.rows_per_file:03d}.jsonl", commit=False)

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


IndexT = TypeVar("IndexT", bound="ScratchIndex")


class ScratchIndex:
    """An on-disk index for one pass over rows (no memory per row): a SQLite file with no journal and no fsync,
    created afresh with `tables` and removed on exit. Nothing in it needs to survive a crash."""

    def __init__(self, path: Path, tables: list[str]):
        self.path = path
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        for table in tables:
            self.db.execute(f"CREATE TABLE {table}")

    def __enter__(self: IndexT) -> IndexT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def output_path(value: str | os.PathLike[str], what: str = "Output directory") -> Path:
    """`value` as a path, refusing an empty one (which would mean the current directory to some and nothing to others)."""
    if not os.fspath(value).strip():
        raise ConfigError(
            f"{what} is empty (''): give the path of a directory, new, empty or holding a run (an unset shell variable in -o \"$OUT\" gives '')."
        )
    return Path(value)


class RunDir:
    """The layout of one run's output directory, whether it starts afresh or resumes, and its lock.

    A directory holding a run of the same chain and inputs is resumed; one holding another run is refused
    unless `overwrite`, and one holding anything but a run (its MANIFEST) is refused even then. The run owns the
    directory (runlock.RunLock) from here to `close`: a second process is refused. With `output_format="parquet"`
    the nodes' JSONL output files live under `.chainette/outputs/` and `export_parquet` writes the user-facing
    Parquet files.
    """

    def __init__(self, root: str | os.PathLike[str], identity: dict[str, Any], *, overwrite: bool = False, output_format: str = "jsonl"):
        if output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"Output format '{output_format}' is not one of: {', '.join(OUTPUT_FORMATS)}.")
        if output_format == "parquet":
            parquet.require("--format parquet (output_format='parquet')")
        self.root = output_path(root)
        self.state = self.root / STATE_DIR
        self.output_format = output_format
        _check_place(self.root, overwrite)
        self._lock = RunLock(self.state, "a chainette run")
        try:
            self.resumed = self._prepare({**identity, "format": output_format}, overwrite)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let go of the directory: another run may use it from now on."""
        self._lock.release()

    def _prepare(self, identity: dict[str, Any], overwrite: bool) -> bool:
        manifest = self.state / MANIFEST
        if manifest.exists() and not overwrite:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
            for key, what in (("chain", "another chain (or a changed one)"), ("inputs", "other inputs")):
                if None not in (previous.get(key), identity.get(key)) and previous[key] != identity[key]:
                    if key == "chain":
                        what = _changed_nodes(previous.get("nodes"), identity.get("nodes")) or what
                    raise ChainetteError(
                        f"Output directory {self.root} holds a run of {what}. Choose another directory, or pass --overwrite (overwrite=True) to start afresh."
                    )
            written = previous.get("format", "jsonl")
            if written != identity["format"]:
                raise ChainetteError(
                    f"Output directory {self.root} holds a run written as {written}, not {identity['format']}. "
                    f"Resume it with --format {written} (output_format='{written}'), choose another directory, or pass --overwrite (overwrite=True) to start afresh."
                )
            return True
        try:
            if overwrite:
                _empty_run_dir(self.root, keep=self._lock.path)
            write_atomically(manifest, json.dumps(identity).encode())
        except OSError as exc:
            raise ChainetteError(f"Output directory {self.root} is not writable: {exc.strerror} ({exc.filename}).") from None
        return False

    def node_folder(self, node_id: str) -> Path:
        """Where a node's (or flattened's) JSONL output files live: the user-facing folder, or under the state with Parquet."""
        if self.output_format == "parquet":
            return self.state / "outputs" / node_id
        return self.root / node_id

    def export_parquet(self, names: Iterable[str]) -> None:
        """Write the JSONL outputs of each of `names` as Parquet files in its user-facing folder (a no-op for JSONL runs)."""
        if self.output_format == "parquet":
            for name in names:
                parquet.export_folder(self.node_folder(name), self.root / name)

    def write_json(self, name: str, data: Any) -> None:
        """Write `name` in the run directory as indented JSON, whole (never half a file after a crash)."""
        write_atomically(self.root / name, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def _check_place(root: Path, overwrite: bool) -> None:
    """Refuse, before anything is created or deleted, an output path that is no directory, a link to overwrite
    through, or a directory that is neither empty nor a run (with `overwrite` too: it deletes runs only)."""
    try:
        if root.is_symlink() and overwrite:
            raise ChainetteError(
                f"Output directory {root} is a symbolic link (to {os.readlink(root)}): --overwrite (overwrite=True) does not "
                "delete through a link, and nothing was deleted. Pass the directory it points to if that is the run to replace."
            )
        if root.is_symlink() and not root.exists():
            raise ChainetteError(
                f"Output directory {root} is a symbolic link to {os.readlink(root)}, which does not exist: create it, or choose another directory."
            )
        if root.exists() and not root.is_dir():
            raise ChainetteError(
                f"Output directory {root} is not a directory: choose a directory (new, empty, or holding a run of this chain to resume)."
            )
        if root.is_dir() and not (root / STATE_DIR / MANIFEST).exists() and any(entry.name != STATE_DIR for entry in root.iterdir()):
            if overwrite:
                raise ChainetteError(
                    f"Output directory {root} is not empty and holds no chainette run (no {STATE_DIR}/{MANIFEST}): --overwrite "
                    "(overwrite=True) deletes only a run directory, and nothing was deleted. Choose a new or empty directory."
                )
            raise ChainetteError(f"Output directory {root} is not empty and holds no chainette run. Choose a new or empty directory.")
    except OSError as exc:
        raise ChainetteError(f"Cannot use output directory {root}: {exc.strerror} ({exc.filename}).") from None


def _empty_run_dir(root: Path, keep: Path) -> None:
    """Delete everything in the run directory `root` but its state folder's file `keep`: the lock the caller holds
    (deleted, a new lock file there would let a second run in)."""
    for entry in root.iterdir():
        if entry.name == STATE_DIR and not entry.is_symlink():
            for inner in entry.iterdir():
                if inner != keep:
                    _delete(inner)
        else:
            _delete(entry)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _changed_nodes(before: dict[str, str] | None, now: dict[str, str] | None) -> str:
    """What a refusal says changed, when both manifests keep per-node fingerprints and some of the same ids differ
    (else nothing): "a changed chain: 'a', 'b' changed since (...)"."""
    if not before or not now:
        return ""
    changed = [f"'{node_id}'" for node_id, fingerprint in now.items() if node_id in before and before[node_id] != fingerprint]
    if not changed:
        return ""
    return (
        f"a changed chain: {', '.join(changed)} changed since it started "
        "(a step's prompts, models or sampling, or an apply function's code, which decided the rows done so far)"
    )
