"""The end-of-run table: per node, rows in/ok/failed/filtered, tokens and time."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def summary_table(stats: dict[str, Any]) -> Table:
    """A rich table of the per-node counts in a run's `run.json`."""
    table = Table(title=f"{stats['chain']}: {stats['status']} in {stats['seconds']:.1f}s")
    table.add_column("node")
    for column in ("in", "ok", "failed", "filtered", "tokens in/out", "seconds"):
        table.add_column(column, justify="right")
    rows = stats["input"]
    table.add_row("(input)", str(rows["rows"]), str(rows["rows"] - rows["invalid"]), str(rows["invalid"]), "", "", "")
    for node_id, node in stats["steps"].items():
        tokens = f"{node['input_tokens']}/{node['output_tokens']}" if node["kind"] == "step" else ""
        counts = (node["rows_in"], node["ok"], node["failed"], node["filtered"])
        table.add_row(node_id, *map(str, counts), tokens, f"{node['seconds']:.2f}")
    return table
