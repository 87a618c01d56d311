"""`chainette plan`: run a sample of the input's rows and project, per step and in total, what the whole run would ask,
cost and take (chainette.plan), as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from chainette.cli.loading import load_chain

if TYPE_CHECKING:
    from rich.console import Group

    from chainette.plan import Plan
    from chainette.plan.projection import Range


def plan_command(
    chain: str = typer.Argument(..., help="The chain: path/to/file.py:attr, package.module:attr or chain.yaml."),
    inputs: str = typer.Option(
        ..., "--inputs", "-i", help="Input rows, as for `run`: a file, local or at a URL, or hf:name[:config]:split."
    ),
    sample: int = typer.Option(20, "--sample", min=1, help="How many input rows to run for real (spread over the input)."),
    engines: Path | None = typer.Option(None, "--engines", "-e", help="A YAML file defining every engine the chain uses, as for `run`."),
    columns: str | None = typer.Option(None, "--columns", help="Input fields to keep, renamed with =, as for `run`."),
    id_column: str | None = typer.Option(None, "--id-column", help="The input column holding each row's own id, as for `run`."),
    batch: bool = typer.Option(
        False, "--batch", help="Price the steps whose backend can run batch jobs at batch prices, as `run --batch` would run them."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Plan a run with --no-cache: the sample is asked afresh and no row counts as cached."
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="The response cache's folder, as for `run`."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Run a sample of INPUTS through CHAIN for real (answered from the response cache where it can, into a temporary
    folder) and project for the whole input, per step and in total: requests, tokens, cost and time, with 90 % intervals.
    """
    from chainette.engines import load_engines_from_yaml
    from chainette.plan import make_plan

    loaded = load_chain(chain)
    if engines is not None:
        load_engines_from_yaml(engines, used=loaded.engine_users())
    plan = make_plan(
        loaded, inputs, sample=sample, columns=columns, id_column=id_column, batch=batch, cache=not no_cache, cache_dir=cache_dir
    )
    if as_json:
        typer.echo(json.dumps(plan.as_json(), indent=2))
        return
    from chainette.cli.run import _console

    _console().print(plan_table(plan), soft_wrap=True)


def plan_table(plan: Plan) -> Group:
    """The plan as a rich table (a row per step, and the total), with lines saying what the figures rest on."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    title = Text(f"{plan.chain}: plan for {plan.total_rows:,} input rows", style="table.title")
    table = Table(title=title, title_justify="left")
    table.add_column("step")
    for column in ("rows", "cached", "requests", "tokens in", "tokens out", "cost (90 %)", "time"):
        table.add_column(column, justify="right")
    for step in plan.steps:
        cost = _money(step.cost_usd) + (" batch" if step.batch else "")
        time = "batch" if step.batch else _duration(step.seconds)
        counts = (step.rows, step.requests, step.input_tokens, step.output_tokens)
        table.add_row(Text(step.step), _count(counts[0]), f"{step.cached_rows:,}", *(_count(figure) for figure in counts[1:]), cost, time)
    table.add_row(Text("total", style="bold"), "", "", "", "", "", _money(plan.cost_usd), _duration(plan.seconds))
    how = "spread over the input" if plan.spread else "the first rows"
    lines: list[RenderableType] = [
        table,
        Text(f"Sample: {plan.sample_rows:,} rows, {how}; intervals are 90 % from the spread between its sessions."),
    ]
    lines += [Text(f"Cached rows: {_cache_note(plan)}.")]
    if plan.unpriced:
        names = ", ".join(plan.unpriced)
        lines.append(Text(f"Cost unknown for engine {names}: set price_per_million_input and price_per_million_output.", style="yellow"))
    return Group(*lines)


def _cache_note(plan: Plan) -> str:
    ways = sorted({step.cache for step in plan.steps})
    return "; ".join(f"{', '.join(step.step for step in plan.steps if step.cache == way)} {way}" for way in ways)


def _count(figure: Range) -> str:
    if figure.low == figure.high:
        return f"{figure.estimate:,.0f}"
    return f"{figure.estimate:,.0f} ({figure.low:,.0f}-{figure.high:,.0f})"


def _money(figure: Range | None) -> str:
    if figure is None:
        return "unknown"
    if figure.low == figure.high:
        return f"${figure.estimate:.4f}"
    return f"${figure.estimate:.4f} (${figure.low:.4f}-${figure.high:.4f})"


def _duration(seconds: float | None) -> str:
    from chainette.ui.state import duration

    return "unknown" if seconds is None else duration(seconds)
