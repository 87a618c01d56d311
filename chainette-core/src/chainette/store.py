"""The run directory: streaming JSONL writers and readers, run metadata, and the result object."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import json
import os
from pathlib import Path
import re
import shutil
from typing import Any, TextIO

from pydantic import BaseModel

from chainette.errors import ChainetteError

ROWS_PER_FILE = 100_000
STATE_DIR = ".chainette"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class JsonlFile:
    """Appends one JSON object per line to a single file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(_dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of one JSONL file."""
    with open(path, encoding="utf-8") as file:
        for line in file:
            yield json.loads(line)


class JsonlWriter:
    """Appends one JSON object per line to `folder/000.jsonl`, rolling to `001.jsonl` every `rows_per_file` rows."""

    def __init__(self, folder: Path, rows_per_file: int = ROWS_PER_FILE):
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.count = 0
        self._file: TextIO | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None or self.count % self.rows_per_file == 0:
            self._roll()
        self._file.write(_dumps(record) + "\n")
        self.count += 1

    def _roll(self) -> None:
        if self._file is not None:
            self._file.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder / f"{self.count // self.rows_per_file:03d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of the numbered JSONL files in `folder`, file by file (nothing if it does not exist)."""
    for path in sorted(folder.glob("[0-9][0-9][0-9]*.jsonl")):
        yield from read_lines(path)


def row_order(row_id: str) -> tuple[int, ...]:
    """Sort key that puts "2" before "10" and "3-1" right after "3"."""
    return tuple(int(part) for part in re.findall(r"\d+", row_id))


class RunDir:
    """The layout of one run's output directory."""

    def __init__(self, root: str | os.PathLike[str], *, overwrite: bool = False):
        self.root = Path(root)
        self._prepare(overwrite)
        self.state = self.root / STATE_DIR

    def _prepare(self, overwrite: bool) -> None:
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise ChainetteError(
                    f"Output directory {self.root} is not empty. Choose another one, or pass --overwrite (overwrite=True) to replace it."
                )
            shutil.rmtree(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ChainetteError(f"Output directory {self.root} is not writable: {exc.strerror}.") from None

    def node_folder(self, node_id: str) -> Path:
        return self.root / node_id

    def write_json(self, name: str, data: Any) -> None:
        (self.root / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def remove_state(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)


class RunResult(Mapping[str, list[BaseModel]]):
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
        return sorted(read_jsonl(self.output_dir / step_id), key=lambda r: row_order(r["row_id"]))

    @property
    def errors(self) -> list[dict[str, Any]]:
        path = self.output_dir / "errors.jsonl"
        if not path.exists():
            return []
        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]

    @property
    def flattened(self) -> list[dict[str, Any]]:
        return sorted(read_jsonl(self.output_dir / "flattened"), key=lambda r: row_order(r["row_id"]))

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads((self.output_dir / "run.json").read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"RunResult(output_dir={str(self.output_dir)!r}, steps={list(self._models)})"
