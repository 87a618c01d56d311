"""`chainette run`: run a chain over an input file into an output directory."""

from __future__ import annotations

import os
from pathlib import Path
import sys
from typing import TYPE_CHECKING

import typer

from chainette.cli.loading import load_chain
from chainette.errors import ConfigError, RunInterrupted
from chainette.remote import is_url

NON_TERMINAL_WIDTH = 160

if TYPE_CHECKING:
    from rich.console import Console

    from chainette.chain import Chain
    from chainette.events import Listener


def run_command(
    chain: str = typer.Argument(..., help="The chain: path/to/file.py:attr, package.module:attr or chain.yaml."),
    inputs: str = typer.Option(
        ...,
        "--inputs",
        "-i",
        help="Input rows: a .jsonl, .json, .csv or .parquet file, local or at a URL (s3://, gs://, hf://...), or hf:name[:config]:split (a Hugging Face dataset).",
    ),
    output_dir: str = typer.Option(
        ...,
        "--output",
        "-o",
        metavar="OUTPUT",
        help="Output directory: new, empty, or holding a run of this chain to resume; or a URL (s3://bucket/prefix) to upload the finished outputs to.",
    ),
    engines: Path | None = typer.Option(
        None, "--engines", "-e", help="A YAML file defining every engine the chain uses (replacing the chain file's own)."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Delete the run the output directory holds and start afresh (a directory holding no run is never deleted).",
    ),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Run again the rows in the output directory's errors.jsonl."),
    json_logs: bool = typer.Option(False, "--json-logs", help="Print one JSON event per line instead of the live view."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
    columns: str | None = typer.Option(
        None, "--columns", help="Input fields to keep, renamed with =: 'text,label' or 'review=text,stars'."
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="The input column holding each row's own id (unique), kept as row_id; by default rows are numbered."
    ),
    durable: bool = typer.Option(False, "--durable", help="fsync every write, so that even a power loss loses no finished row."),
    output_format: str = typer.Option("jsonl", "--format", help="Output files: jsonl or parquet (needs chainette-core[parquet])."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither answer from the response cache nor store answers in it."),
    refresh_cache: bool = typer.Option(
        False, "--refresh-cache", help="Request every row again (fresh samples) and replace the cached answers with the new ones."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="The response cache's folder (default: $CHAINETTE_CACHE_DIR, else the user cache folder)."
    ),
    batch: bool = typer.Option(
        False, "--batch", help="Answer every step whose backend can as offline batch jobs (half the price on OpenAI)."
    ),
    cancel_batches: bool | None = typer.Option(
        None,
        "--cancel-batches/--keep-batches",
        help="On Ctrl-C or SIGTERM, cancel the batch jobs in flight, or leave them running; by default a terminal asks, else they are kept.",
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        help="Run only the first N input rows (to try a chain); the same command without --limit then goes on with the rest.",
    ),
    on: str | None = typer.Option(
        None,
        "--on",
        help="Run the chain with a runner plugin instead of here: ray (RAY_ADDRESS, else a local cluster) or ray://HOST:PORT (chainette-ray).",
    ),
    otel: bool = typer.Option(
        False,
        "--otel",
        help="Send OpenTelemetry spans and metrics of the run, its nodes and requests (chainette-core[otel]; docs/telemetry.md).",
    ),
    max_cost: float | None = typer.Option(
        None,
        "--max-cost",
        metavar="USD",
        help="Stop gracefully (resumable, exit status 4) once this command has spent USD, its requests in flight included; every engine needs a price.",
    ),
) -> None:
    """Run CHAIN over INPUTS and write every step's outputs, the errors and the run's metadata to OUTPUT.

    Running the same command again on an unfinished run resumes it: rows already answered are not requested again.
    """
    from chainette.engines import load_engines_from_yaml
    from chainette.outcome import exit_status
    from chainette.run.options import RunOptions
    from chainette.run.rundir import output_path
    from chainette.run.session import run_blocking
    from chainette.run.staging import UploadedRun, staging_dir
    from chainette.ui.summary import summary

    if no_cache and refresh_cache:
        raise ConfigError("--no-cache and --refresh-cache contradict each other: give one of them.")
    output = output_dir if is_url(output_dir) else output_path(output_dir, "The output directory (-o)")
    loaded = load_chain(chain)
    if engines is not None:
        load_engines_from_yaml(engines, used=loaded.engine_users())
    console = _console()
    options = RunOptions(
        output_dir=output,
        overwrite=overwrite,
        retry_errors=retry_errors,
        reporter=_reporter(console, json_logs, quiet),
        columns=columns,
        id_column=id_column,
        output_format=output_format,
        durable=durable,
        cache=False if no_cache else "refresh" if refresh_cache else True,
        cache_dir=cache_dir,
        batch=batch,
        cancel_batches=cancel_batches is True,
        limit=limit,
        on=on,
        telemetry=otel,
        max_cost=max_cost,
    )
    try:
        result = run_blocking(loaded, inputs, options)
    except RunInterrupted:
        if cancel_batches is None:
            _offer_to_cancel(loaded, staging_dir(output) if isinstance(output, str) else output, batch)
        raise
    if not json_logs:
        console.print(summary(result.stats, str(output)), soft_wrap=True)
        if isinstance(result, UploadedRun):
            console.print(result.note(), soft_wrap=True, markup=False)
    code, reason = exit_status(result.stats)
    if reason and json_logs:
        typer.echo(f"Exit status {code}: {reason}", err=True)
    if code:
        raise typer.Exit(code)


def _offer_to_cancel(chain: Chain, output: Path, batch: bool) -> None:
    """After a stop, in a terminal: ask whether to cancel the batch jobs the run left running, and do so if told."""
    import asyncio

    from chainette import graph
    from chainette.execution.batching import batch_engines, cancel_left_running, left_running
    from chainette.nodes import Step
    from chainette.run.rundir import RunPaths
    from chainette.runlock import RunLock

    running = left_running(output)
    if not running or not sys.stdin.isatty():
        return
    if not typer.confirm(f"{running} batch jobs keep running on the provider. Cancel them?", default=False, err=True):
        typer.echo("They keep running: run the same command again to collect their answers.", err=True)
        return
    steps = {node.id: node.engine_name for node in graph.iter_nodes(chain.nodes) if isinstance(node, Step)}
    engines = batch_engines(chain.engines(), list(steps.values()), forced=batch)
    with RunLock(RunPaths(output).state, "a chainette run cancelling its batch jobs"):
        cancelled = asyncio.run(cancel_left_running(output, engines, steps))
    typer.echo(f"Cancelled {cancelled} batch jobs; the next run asks their rows again.", err=True)


def _console() -> Console:
    """A console for the live view and the summary; off a terminal (a log file, CI), wide enough not to wrap the
    summary at 80 columns, unless COLUMNS says otherwise."""
    from rich.console import Console

    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=NON_TERMINAL_WIDTH)


def _reporter(console: Console, json_logs: bool, quiet: bool) -> Listener | None:
    """The event listener the flags ask for: JSON lines, nothing, the live view in a terminal, or plain lines."""
    if json_logs:
        from chainette.ui.jsonlog import JsonLines

        return JsonLines()
    if quiet:
        return None
    if console.is_terminal:
        from chainette.ui.live import LiveView

        return LiveView(console)
    from chainette.ui.plain import PlainLines

    return PlainLines()
