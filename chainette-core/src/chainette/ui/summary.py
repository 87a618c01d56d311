"""The end-of-run table: per node rows in/ok/failed/filtered, rows out (passed on to the next node: more than `ok`
where a node fans rows out or asks several samples), rows answered from the cache, tokens, cost and time,
where the outputs are, what the cache saved and the budget spent, and why the exit status is not 0 when it is not."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chainette.outcome import EXIT_SOME_ROWS_FAILED, exit_status
from chainette.ui.state import duration, money


def summary(stats: dict[str, Any], output_dir: str) -> Group:
    """A rich renderable of a run's `run.json` counts; names and paths are shown as they are, never read as markup."""
    title = Text(f"{stats['chain']}: {stats['status']} in {duration(stats['seconds'])}", style="table.title")
    table = Table(title=title, title_justify="left")
    table.add_column("node")
    for column in ("in", "ok", "failed", "filtered", "out", "cached", "tokens in/out", "cost", "time"):
        table.add_column(column, justify="right")
    rows = stats["input"]
    valid = str(rows["rows"] - rows["invalid"])
    table.add_row("(input)", str(rows["rows"]), valid, str(rows["invalid"]), "", valid, "", "", "", "")
    for node_id, node in stats["steps"].items():
        tokens = _tokens(node) if node["kind"] == "step" else ""
        cost = money(node.get("cost_usd")) if node["kind"] == "step" else ""
        counts = (node["rows_in"], node["ok"], node["failed"], node["filtered"], node["rows_out"])
        cached = str(node.get("cached", 0)) if node["kind"] == "step" else ""
        table.add_row(Text(node_id), *map(str, counts), cached, tokens, cost, f"{node['seconds']:.1f}s")
    total = f"   total cost {money(stats.get('cost_usd'))}" if stats.get("cost_usd") is not None else ""
    where = Text(f"Outputs: {output_dir}/<node>/   flattened: {output_dir}/flattened/   errors: {output_dir}/errors.jsonl{total}")
    lines: list[RenderableType] = [table, where, *_cache_line(stats), *_budget_line(stats), *_limit_line(stats)]
    code, reason = exit_status(stats)
    if reason is not None:
        lines.append(Text(f"Exit status {code}: {reason}", style="bold yellow" if code == EXIT_SOME_ROWS_FAILED else "bold red"))
    return Group(*lines)


def _tokens(node: dict[str, Any]) -> str:
    """`in/out`, and the input read from and written to the provider's prompt cache where there was any."""
    text = f"{node['input_tokens']}/{node['output_tokens']}"
    read, written = node.get("cache_read_tokens", 0), node.get("cache_write_tokens", 0)
    cached = [f"+{read} cached" if read else "", f"+{written} to cache" if written else ""]
    return " ".join([text, *filter(None, cached)])


def _cache_line(stats: dict[str, Any]) -> list[Text]:
    """`Cache: N of M rows answered without a request, saving T tokens ($X)`, when the cache answered any row."""
    steps = [node for node in stats["steps"].values() if node["kind"] == "step"]
    cached = sum(node.get("cached", 0) for node in steps)
    if not cached:
        return []
    answered = sum(node["ok"] for node in steps)
    kinds = ("input", "output", "cache_read", "cache_write")
    tokens = sum(node.get(f"saved_{kind}_tokens", 0) for node in steps for kind in kinds)
    saved = f" ({money(stats['saved_usd'])})" if stats.get("saved_usd") is not None else ""
    return [Text(f"Cache: {cached} of {answered} step rows answered without a request, saving {tokens} tokens{saved}.", style="cyan")]


def _budget_line(stats: dict[str, Any]) -> list[Text]:
    """`Budget: $X of $Y spent by this session (--max-cost)`, and whether it was reached, when the run had one."""
    budget = stats.get("budget")
    if not budget:
        return []
    reached = ": reached, the run stopped" if stats["status"] == "budget_reached" else ""
    spent, limit = money(budget["spent_usd"]), money(budget["max_cost_usd"])
    return [Text(f"Budget: {spent} of {limit} spent by this session (--max-cost){reached}.", style="cyan")]


def _limit_line(stats: dict[str, Any]) -> list[Text]:
    """What a run that its limit cut short did, and how to go on, when it was."""
    if stats["status"] != "limited":
        return []
    limit = stats["limit"]
    return [
        Text(
            f"Limited to the first {limit:,} input rows (--limit {limit}): run the same command without --limit to go on "
            "with the rest, or with a larger limit to go further.",
            style="cyan",
        )
    ]
