"""The input stage: each raw input row, parsed into the chain's input model, becomes a row of the first
frontier; a row that does not parse goes to the errors file. Row ids are the rows' positions in the input."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from chainette import inputs
from chainette.execution.files import ErrorLog, NodeFiles
from chainette.frontier import Commit, Row
from chainette.nodes import INPUT_ID
from chainette.stats import NodeStats


def ingest(
    raw_rows: Iterable[inputs.RawRow],
    model: type[BaseModel] | None,
    decided: set[str],
    files: NodeFiles,
    stats: NodeStats,
    errors: ErrorLog,
) -> None:
    """Commit every input row not in `decided` to the input frontier (or to the errors file)."""
    for index, row in enumerate(raw_rows):
        row_id = str(index)
        if row_id in decided:
            continue
        stats.session.rows += 1
        try:
            data = inputs.parse(row, model)
        except ValueError as exc:
            stats.failed += 1
            raw = row.value.rstrip("\n") if isinstance(row.value, str) else None
            errors.record(row_id, INPUT_ID, "invalid_input", str(exc), raw)
            continue
        stats.ok += 1
        files.frontier.commit(Commit(row_id, [Row(row_id, {INPUT_ID: data}, INPUT_ID)]))
