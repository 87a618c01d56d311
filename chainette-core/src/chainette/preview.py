"""The prompts a chain would send for the first rows of its input, rendered without sending anything (what
`chainette inspect --inputs` shows).

Only those rows are read. Nothing after the input is real: each step's answer and each apply's output is a
placeholder that the fake backend's generator makes from the node's output model (an apply without one passes its
input on, and no apply runs), so that the prompts of later steps render too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import itertools
from typing import Any

from chainette import inputs
from chainette.backends.fake import synthesize
from chainette.execution.ingest import identify
from chainette.execution.prompts import Prompts
from chainette.frontier import Row
from chainette.nodes import INPUT_ID, Apply, Node, Parallel, Step
from chainette.schema import json_schema


@dataclass
class RenderedStep:
    """One step's messages for a row (or why they do not render), and the earlier ids whose values are placeholders."""

    step_id: str
    messages: list[dict[str, Any]] | None
    error: str | None
    placeholders: list[str]


@dataclass
class RowPrompts:
    """One input row: its id, where it was read, why it is not valid input (then no step renders), each step's prompts."""

    row_id: str
    where: str
    invalid: str | None = None
    steps: list[RenderedStep] = field(default_factory=list)


def first_prompts(
    nodes: list[Node],
    input_model: Any,
    source: inputs.Inputs,
    *,
    rows: int,
    columns: inputs.ColumnSpec = None,
    id_column: str | None = None,
) -> Iterator[RowPrompts]:
    """The prompts of every step for each of the first `rows` input rows of `source`."""
    raw_rows = inputs.open_rows(source, inputs.Columns.parse(columns))
    for index, raw in enumerate(itertools.islice(raw_rows, rows)):
        row_id, value = identify(raw, index, id_column)
        try:
            if isinstance(value, ValueError):
                raise value
            data = inputs.validate(raw, value, input_model)
        except ValueError as exc:
            yield RowPrompts(row_id, raw.where, invalid=str(exc))
            continue
        found = RowPrompts(row_id, raw.where)
        _walk(nodes, Row(row_id, {INPUT_ID: data}, INPUT_ID, index=index), [], found.steps)
        yield found


def _walk(nodes: list[Node], row: Row, made: list[str], out: list[RenderedStep]) -> tuple[Row, list[str]]:
    """Render the steps of `nodes` for `row` into `out`; return the row as it leaves them, and the ids whose values
    in it are placeholders."""
    for node in nodes:
        if isinstance(node, Parallel):
            joined: dict[str, Any] = {}
            for branch in node.branches:
                end, _ = _walk(branch.steps, row, made, out)
                if branch.alias:
                    joined[branch.alias] = end.ctx[end.direct]
            row = Row(row.row_id, {**row.ctx, **joined}, row.direct, index=row.index)
            made = [*made, *joined]
            continue
        if isinstance(node, Step):
            out.append(_render(node, row, made))
        row = Row(row.row_id, {**row.ctx, node.id: _placeholder(node, row)}, node.id, index=row.index)
        made = [*made, node.id]
    return row, made


def _render(step: Step, row: Row, made: list[str]) -> RenderedStep:
    try:
        return RenderedStep(step.id, Prompts.of(step).messages(row), None, list(made))
    except Exception as exc:
        return RenderedStep(step.id, None, f"cannot render the prompt: {exc}", list(made))


def _placeholder(node: Step | Apply, row: Row) -> Any:
    """A value valid for the node's output model, the same for the same row; an apply without one passes its input on."""
    if node.output_model is None:
        return row.ctx[row.direct]
    return synthesize(json_schema(node.output_model), seed_text=f"{row.row_id}/{node.id}")
