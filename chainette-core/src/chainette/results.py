"""A finished (or stopped) run read back from its directory: each step's outputs as model instances in
input order, the failed rows, the flattened table and run.json's figures."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
import json
from pathlib import Path
import re
from typing import Any

from pydantic import BaseModel

from chainette.run.appends import read_lines, read_outputs
from chainette.run.rundir import ERRORS_FILE, FLATTENED, RUN_FILE


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
            return [{k: v for k, v in row.items() if k not in ("row_id", "row_index")} for row in rows]
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
        return _sorted(read_lines(self.output_dir / ERRORS_FILE))

    @property
    def flattened(self) -> list[dict[str, Any]]:
        return _sorted(read_outputs(self.output_dir / FLATTENED))

    @property
    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads((self.output_dir / RUN_FILE).read_text(encoding="utf-8"))
        return stats

    def __repr__(self) -> str:
        return f"RunResult(output_dir={str(self.output_dir)!r}, steps={list(self._models)})"


def _sorted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["row_index"], row_order(r["row_id"])))


def row_order(row_id: str) -> tuple[int, ...]:
    """Sort key, among the rows of one input row, that puts "3-2" before "3-10" (the numbers in the id, in order)."""
    return tuple(int(part) for part in re.findall(r"\d+", row_id))
