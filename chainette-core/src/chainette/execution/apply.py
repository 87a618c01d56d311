"""The apply stage: a plain Python function (sync or async) over each row's direct input. It returns one
output, a list of them (a fan-out: children `<row_id>-<i>`), or an empty list (the row is filtered out)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
import inspect
from typing import Any, cast

from pydantic import BaseModel

from chainette.execution.context import keep
from chainette.execution.feed import Source
from chainette.execution.files import Stage
from chainette.frontier import Row
from chainette.nodes import Apply
from chainette.values import unwritable, why

YIELD_EVERY = 64  # rows a synchronous apply handles before letting the loop flush files and take signals


@dataclass
class ApplyStage(Stage):
    """Runs one Apply over the rows of a frontier; `models` gives each node's output model, to validate its direct input."""

    node: Apply
    models: Mapping[str, type[BaseModel] | None]

    async def process(self, source: Source) -> None:
        """Apply the function to every row of `source`, in order, until the rows run out or the run stops."""
        count = 0
        while (row := await source.next()) is not None:
            count += 1
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            self.stats.in_flight += 1
            try:
                results = await self._call(row)
            except Exception as exc:
                self.stats.failed += 1
                self.files.fail(row, "apply_error", f"{type(exc).__name__}: {exc}")
                continue
            finally:
                self.stats.in_flight -= 1
                self.stats.session.rows += 1
            found = next(filter(None, map(unwritable, results)), None)
            if found is not None:
                self.stats.failed += 1
                self.files.fail(row, "invalid_output", f"'{self.node.id}' returned {found[0]} = {why(found[1])}; return another value")
                continue
            self._commit(row, results)

    def _commit(self, row: Row, results: list[dict[str, Any]]) -> None:
        children = []
        fanned = len(results) > 1
        for index, data in enumerate(results):
            ctx = keep({**row.ctx, self.node.id: data}, self.kept, self.node.id)
            child = row.passed_on(ctx, self.node.id, index if fanned else None)
            if self.files.outputs is not None:
                self.files.outputs.write({**data, "row_id": child.row_id, "row_index": row.index})
            children.append(child)
        self.files.commit(row, children)
        self.stats.rows_out += len(children)
        if children:
            self.stats.ok += 1
        else:
            self.stats.filtered += 1

    async def _call(self, row: Row) -> list[dict[str, Any]]:
        direct = row.ctx[row.direct]
        model = self.node.input_model or self.models.get(row.direct)
        item = model.model_validate(direct) if model is not None else direct
        result = self.node.fn(item)
        if inspect.isawaitable(result):
            result = await result
        items = result if isinstance(result, list) else [result]
        return [_as_data(self.node, out) for out in items]


def _as_data(node: Apply, out: Any) -> dict[str, Any]:
    """One output of the function as JSON-ready data, validated by the node's output model when it has one."""
    if isinstance(out, BaseModel):
        model: BaseModel = out
        if node.output_model is not None and not isinstance(out, node.output_model):
            model = node.output_model.model_validate(out.model_dump())
        return model.model_dump(mode="json")
    if isinstance(out, dict):
        if node.output_model is not None:
            return node.output_model.model_validate(out).model_dump(mode="json")
        return cast("dict[str, Any]", out)
    raise TypeError(f"apply '{node.id}' returned {type(out).__name__}; return a pydantic model, a dict, or a list of them")
