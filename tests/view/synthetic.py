"""Run directories written line by line, in the layout docs/output.md describes, for runs larger than the tests
should generate through a chain: one step, `label`, over `rows` input rows, its outputs split into numbered files."""

from __future__ import annotations

import json
from pathlib import Path

GRAPH = {
    "chain": "big",
    "nodes": [{"id": "chain_input", "kind": "input"}, {"id": "label", "kind": "step", "engine": "llm", "output_model": "Label"}],
    "edges": [["chain_input", "label"]],
    "engines": {},
}


def output_line(index: int) -> str:
    return json.dumps({"label": f"label-{index % 7}", "score": index, "row_id": str(index), "row_index": index}) + "\n"


def input_line(index: int) -> str:
    row = {"row_id": str(index), "ctx": {"chain_input": {"text": f"text {index}"}}, "direct": "chain_input", "index": index, "up": []}
    return json.dumps({"n": 1, "source": str(index), "rows": [row]}) + "\n"


def write_run(root: Path, rows: int, part_rows: int, *, finished: bool = True) -> Path:
    """A run of `rows` rows, `part_rows` to an output file; run.json only when `finished`."""
    (root / "label").mkdir(parents=True)
    (root / ".chainette").mkdir()
    (root / "graph.json").write_text(json.dumps(GRAPH))
    for part, start in enumerate(range(0, rows, part_rows)):
        lines = (output_line(index) for index in range(start, min(start + part_rows, rows)))
        (root / "label" / f"{part:03d}.jsonl").write_text("".join(lines))
    (root / ".chainette" / "chain_input.jsonl").write_text("".join(input_line(index) for index in range(rows)))
    (root / "errors.jsonl").write_text("")
    if finished:
        steps = {"label": {"rows_in": rows, "ok": rows, "failed": 0, "filtered": 0, "input_tokens": 0, "output_tokens": 0}}
        (root / "run.json").write_text(json.dumps({"chain": "big", "status": "completed", "steps": steps}))
    return root
