"""The run directory: journaled JSONL files, recovery after a crash, run identity, and the result object.

Every line a run writes carries a `row_id`. A row is committed when its line reaches its node's
frontier file (or, for a failed row, the errors file); files are flushed together once per
event-loop iteration, user outputs before frontiers, so a killed run loses at most the rows in
flight, and recovery drops a half-written last line and any output line that was not committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
import errno
import json
import os
from pathlib import Path
import re
import shutil
from typing import Any, BinaryIO

import orjson
from pydantic import BaseModel

from chainette import parquet
from chainette.errors import ChainetteError, ConfigError

ROWS_PER_FILE = 100_000
STATE_DIR = ".chainette"
MANIFEST = "manifest.json"
OUTPUT_FORMATS = ("jsonl", "parquet")


def _line(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


class Journal:
    """The open files of a run. Writes mark it dirty; it flushes every file once per loop iteration."""

    def __init__(self) -> None:
        self._outputs: list[BinaryIO] = []
        self._commits: list[BinaryIO] = []
        self._scheduled = False

    def open(self, path: Path, *, commit: bool) -> BinaryIO:
        """Open `path` for appending; commit files (frontiers, errors) are flushed after the others."""
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open(path, "ab")  # noqa: SIM115 (closed by close())
        (self._commits if commit else self._outputs).append(file)
        return file

    def dirty(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        try:
            for file in (*self._outputs, *self._commits):
                if not file.closed:
                    file.flush()
        except OSError as exc:
            raise _write_error(exc) from None

    def close(self, file: BinaryIO) -> None:
        if not file.closed:
            file.flush()
            file.close()


class LineFile:
    """One JSONL file of a run, appended to through the journal."""

    def __init__(self, journal: Journal, path: Path, *, commit: bool = True):
        self.journal = journal
        self.path = path
        self._file = journal.open(path, commit=commit)

    def write(self, record: Mapping[str, Any]) -> None:
        try:
            self._file.write(_line(record))
        except OSError as exc:
            raise _write_error(exc) from None
        self.journal.dirty()

    def close(self) -> None:
        self.journal.close(self._file)


class OutputFolder:
    """A node's user-facing outputs: `000.jsonl`, rolling to `001.jsonl` every `rows_per_file` rows; appends after a resume."""

    def __init__(self, journal: Journal, folder: Path, rows_per_file: int = ROWS_PER_FILE):
        self.journal = journal
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.count = sum(1 for _ in read_folder(folder))
        self._file: BinaryIO | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None or self.count % self.rows_per_file == 0:
            self._roll()
        try:
            self._file.write(_line(record))
        except OSError as exc:
            raise _write_error(exc) from None
        self.count += 1
        self.journal.dirty()

    def _roll(self) -> None:
        if self._file is not None:
            self.journal.close(self._file)
        self._file = self.journal.open(self.folder / f"{self.count // self.rows_per_file:03d}.jsonl", commit=False)

    def close(self) -> None:
        if self._file is not None:
            self.journal.close(self._file)


def _write_error(exc: OSError) -> ChainetteError:
    if exc.errno == errno.ENOSPC:
        return ChainetteError("The disk is full: the run stopped. Free some space, then run the same command again to resume.")
    return ChainetteError(f"Cannot write the run's files: {exc.strerror} ({exc.filename or 'output directory'}).")


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of one JSONL file (nothing if it does not exist)."""
    if not path.exists():
        return
    with open(path, "rb") as file:
        for line in file:
            yield orjson.loads(line)


def read_folder(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of the numbered JSONL files in `folder`, file by file."""
    for path in sorted(folder.glob("[0-9][0-9][0-9]*.jsonl")):
        yield from read_lines(path)


def read_outputs(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of a user-facing output folder, whether its numbered files are JSONL or Parquet."""
    yield from read_folder(folder)
    for path in sorted(folder.glob("[0-9][0-9][0-9]*.parquet")):
        yield from parquet.read_rows(path)


def drop_partial_line(path: Path) -> None:
    """Cut a file that a killed run left mid-line back to its last complete line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        file.seek(-1, os.SEEK_END)
        if file.read(1) == b"\n":
            return
        file.seek(0)
        data = file.read()
        file.truncate(data.rfind(b"\n") + 1)


def keep_lines(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite `path` with only the records `keep` accepts."""
    if not path.exists():
        return
    drop_partial_line(path)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        for record in read_lines(path):
            if keep(record):
                out.write(_line(record))
    temporary.replace(path)


def row_order(row_id: str) -> tuple[int, ...]:
    """Sort key that puts "2" before "10" and "3-1" right after "3"."""
    return tuple(int(part) for part in re.findall(r"\d+", row_id))


class RunDir:
    """The layout of one run's output directory, and whether it starts afresh or resumes.

    A directory holding a run of the same chain and inputs is resumed; one holding anything else
    is refused unless `overwrite`. With `output_format="parquet"` the nodes' JSONL journals live
    under `.chainette/outputs/` and `export_parquet` writes the user-facing Parquet files.
    """

    def __init__(self, root: str | os.PathLike[str], identity: dict[str, Any], *, overwrite: bool = False, output_format: str = "jsonl"):
        if output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"Output format '{output_format}' is not one of: {', '.join(OUTPUT_FORMATS)}.")
        if output_format == "parquet":
            parquet.require("--format parquet (output_format='parquet')")
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        self.output_format = output_format
        self.resumed = self._prepare({**identity, "format": output_format}, overwrite)

    def _prepare(self, identity: dict[str, Any], overwrite: bool) -> bool:
        manifest = self.state / MANIFEST
        if self.root.exists() and any(self.root.iterdir()) and not overwrite:
            if not manifest.exists():
                raise ChainetteError(
                    f"Output directory {self.root} is not empty and holds no chainette run. Choose another one, or pass --overwrite to replace it."
                )
            previous = json.loads(manifest.read_text(encoding="utf-8"))
            for key, what in (("chain", "another chain (or a changed one)"), ("inputs", "other inputs")):
                if None not in (previous.get(key), identity.get(key)) and previous[key] != identity[key]:
                    raise ChainetteError(
                        f"Output directory {self.root} holds a run of {what}. Choose another directory, or pass --overwrite to start afresh."
                    )
            written = previous.get("format", "jsonl")
            if written != identity["format"]:
                raise ChainetteError(
                    f"Output directory {self.root} holds a run written as {written}, not {identity['format']}. "
                    f"Resume it with --format {written} (output_format='{written}'), choose another directory, or pass --overwrite to start afresh."
                )
            return True
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps(identity), encoding="utf-8")
        except OSError as exc:
            raise ChainetteError(f"Output directory {self.root} is not writable: {exc.strerror}.") from None
        return False

    def node_folder(self, node_id: str) -> Path:
        """Where a node's (or flattened's) JSONL journal of outputs lives: the user-facing folder, or under the state with Parquet."""
        if self.output_format == "parquet":
            return self.state / "outputs" / node_id
        return self.root / node_id

    def export_parquet(self, names: Iterable[str]) -> None:
        """Write each journal of `names` as Parquet files in its user-facing folder (a no-op for JSONL runs)."""
        if self.output_format == "parquet":
            for name in names:
                parquet.export_folder(self.node_folder(name), self.root / name)

    def write_json(self, name: str, data: Any) -> None:
        (self.root / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class RunResult(Mapping[str, list[Any]]):
    """What a run produced, read back from its directory on demand.

    `result[step_id]` is that step's outputs (model instances) in input order; `records(step_id)`
    gives them as dicts with their `row_id`; `errors` lists the failed rows.
    """

    def __init__(self, output_dir: Path, models: Mapping[str, type[BaseModel] | None]):
        self.output_dir = output_dir
        self._models = dict(models)

    def __getitem__(self, step_id: str) -> list[Any]:
        if step_id not in self._models:
            raise KeyError(f"{step_id!r} is not an output of this chain; outputs: {', '.join(self._models)}")
        model = self._models[step_id]
        rows = self.records(step_id)
        if model is None:
            return [{k: v for k, v in row.items() if k != "row_id"} for row in rows]
        return [model.model_validate({k: v for k, v in row.items() if k in model.model_fields}) for row in rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def records(self, step_id: str) -> list[dict[str, Any]]:
        """The step's output lines as written (with `row_id`), sorted in input order."""
        return _sorted(read_outputs(self.output_dir / step_id))

    @property
    def errors(self) -> list[dict[str, Any]]:
        return _sorted(read_lines(self.output_dir / "errors.jsonl"))

    @property
    def flattened(self) -> list[dict[str, Any]]:
        return _sorted(read_outputs(self.output_dir / "flattened"))

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads((self.output_dir / "run.json").read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"RunResult(output_dir={str(self.output_dir)!r}, steps={list(self._models)})"


def _sorted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: row_order(r["row_id"]))
