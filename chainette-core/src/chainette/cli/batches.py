"""`chainette batches OUT`: the batch jobs of a run, as its journals last saw them."""

from __future__ import annotations

import json

import typer

from chainette.errors import ConfigError


def batches_command(
    run_dir: str = typer.Argument(..., metavar="OUT", help="A run's output directory (the -o OUT of `chainette run`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the batch jobs of the run in OUT: step, batch id, rows asked, last state seen, and whether its answers are in.

    Running the same `chainette run` command again collects the answers of those still open. While a run works in
    OUT, a note on stderr names it: the states are then those its journals saw last, and may change.
    """
    from chainette.batch import BatchJournal
    from chainette.run.rundir import RunPaths, output_path
    from chainette.runlock import holder

    output = output_path(run_dir, "The run directory")
    paths = RunPaths(output)
    if not output.is_dir():
        raise ConfigError(f"{output} is not a directory: give the output directory of a run (the -o of chainette run).")
    working = holder(paths.state)
    if working is not None:
        typer.echo(f"{working.describe()} is working in {output}: the states below may change.", err=True)
    journals = {path.parent.name: BatchJournal(path.parent) for path in sorted(paths.batches.glob("*/journal.jsonl"))}
    chunks = [(step, chunk) for step, journal in journals.items() for chunk in journal.chunks.values()]
    if as_json:
        listed = [
            {
                "step": step,
                "chunk": c.name,
                "round": c.round,
                "lines": c.lines,
                "batch_id": c.batch_id,
                "state": c.state,
                "collected": c.done,
            }
            for step, c in chunks
        ]
        typer.echo(json.dumps(listed, indent=2))
        return
    if not chunks:
        typer.echo(f"{output} has no batch jobs.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("step", "batch", "round", "rows", "state", "answers")
    for step, chunk in chunks:
        batch = chunk.batch_id or f"({chunk.name}, not submitted)"
        table.add_row(step, batch, str(chunk.round), str(chunk.lines), chunk.state, "collected" if chunk.done else "to collect")
    Console(highlight=False).print(table)
