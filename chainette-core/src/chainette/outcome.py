"""What a completed run's figures (run.json) mean for its caller: the exit status of `chainette run`, and why.

0: every row made it (answered, passed on or filtered out); 3: the run completed but some input rows failed (each
counted once, however many error lines it has in errors.jsonl; `--retry-errors` runs them again); 1 (the status of
every error the user can fix): a node passed none of its rows on and some of them failed, or no input row was valid.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_NO_ROW_PASSED = 1
EXIT_SOME_ROWS_FAILED = 3


def exit_status(figures: dict[str, Any]) -> tuple[int, str | None]:
    """The exit status for a completed run's run.json `figures`, with a one-line reason when it is not 0 (a figure an
    older version did not write counts as 0)."""
    nodes = figures.get("steps", {})
    empty = [_no_row_passed(node_id, node) for node_id, node in nodes.items() if node.get("failed") and not node.get("ok")]
    source = {"rows": 0, "invalid": 0, **figures.get("input", {})}
    if source["rows"] and source["invalid"] == source["rows"]:
        empty.insert(0, f"none of the {source['rows']} input rows is valid")
    if empty:
        return EXIT_NO_ROW_PASSED, f"{'; '.join(empty)}: see errors.jsonl."
    reasons = []
    if figures.get("rows_failed"):
        reasons.append(f"{_failed_rows(figures['rows_failed'], nodes)}: run the same command with --retry-errors to run them again")
    if source["invalid"]:
        reasons.append(f"{_rows(source['invalid'], 'input row')} not valid: fix them in the input")
    if reasons:
        return EXIT_SOME_ROWS_FAILED, f"{'; '.join(reasons)} (see errors.jsonl)."
    return EXIT_OK, None


def _no_row_passed(node_id: str, node: dict[str, Any]) -> str:
    kind = node.get("kind", "node")
    verb = "answered" if kind == "step" else "passed on"
    return f"{kind} '{node_id}' {verb} none of its {node.get('rows_in', node['failed'])} rows ({node['failed']} failed)"


def _failed_rows(rows_failed: int, nodes: dict[str, Any]) -> str:
    """`N input rows failed`, with the number of error lines when a row failed more than once (at several nodes, in
    several branches, samples or fan-out children)."""
    lines = sum(node.get("failed", 0) for node in nodes.values())
    more = f" ({lines:,} error lines: a row can fail in several branches, samples or fan-out children)" if lines > rows_failed else ""
    return f"{_rows(rows_failed, 'input row')} failed{more}"


def _rows(count: int, noun: str = "row") -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
