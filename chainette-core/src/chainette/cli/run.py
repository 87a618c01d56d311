"""`chainette run`: run a chain over an input file into an output directory."""

from __future__ import annotations

from pathlib import Path

import typer

from chainette.cli.loading import load_chain


def run_command(
    chain: str = typer.Argument(..., help="The chain: path/to/file.py:attr or package.module:attr."),
    inputs: Path = typer.Option(..., "--inputs", "-i", help="Input rows: a JSONL file or a JSON array."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory: new, empty, or holding a run of this chain to resume."),
    engines: Path | None = typer.Option(None, "--engines", "-e", help="A YAML file of engines; replaces same-named engines."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete what the output directory holds and start afresh."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Run again the rows in the output directory's errors.jsonl."),
) -> None:
    """Run CHAIN over INPUTS and write every step's outputs, the errors and the run's metadata to OUTPUT.

    Running the same command again on an unfinished run resumes it: rows already answered are not requested again.
    """
    from rich.console import Console

    from chainette.cli.summary import summary_table
    from chainette.engines import load_engines_from_yaml

    loaded = load_chain(chain)
    if engines is not None:
        load_engines_from_yaml(engines)
    console = Console()
    console.print(f"Running chain [bold]{loaded.name}[/] over {inputs} → {output}")
    result = loaded.run(inputs, output_dir=output, overwrite=overwrite, retry_errors=retry_errors)
    if result.stats["resumed"]:
        console.print("Resumed the unfinished run found there.")
    console.print(summary_table(result.stats))
    failed = len(result.errors)
    if failed:
        console.print(f"[yellow]{failed} row error(s): see {output / 'errors.jsonl'}[/]")
    console.print(f"Outputs in {output}/ (flattened view: {output / 'flattened'}/)")
