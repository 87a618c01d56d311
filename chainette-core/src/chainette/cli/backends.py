"""`chainette backends`: the installed backends and runners and their state; a skeleton for a new backend."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Installed backends and runners.", no_args_is_help=True)


@app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every backend and runner found: name, kind, aliases, distribution, version and status (the error of a broken one).

    A runner (kind "runner", such as ray from chainette-ray) runs whole chains elsewhere: `chainette run --on NAME`.
    Each plugin is loaded and its commands registered, so that a plugin broken in any way shows here.
    """
    from dataclasses import asdict

    from chainette.plugins import get_plugins

    plugins = get_plugins()
    plugins.add_commands(typer.Typer())
    found = plugins.all()
    if as_json:
        typer.echo(json.dumps([{**asdict(info), "status": info.status} for info in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("name", "kind", "aliases", "distribution", "version", "status"):
        table.add_column(column)
    for info in found:
        status = Text(info.status, style="green" if info.error is None else "red")
        table.add_row(*map(Text, (info.name, info.kind, ", ".join(info.aliases), info.distribution, info.version)), status)
    Console().print(table)


@app.command("new")
def new_command(name: str = typer.Argument(..., help="The backend's name: lower-case letters, digits and _, e.g. mybackend.")) -> None:
    """Write a new backend distribution into ./chainette-NAME: pyproject with the entry point, hooks, conformance tests.

    The generated backend echoes the prompt until you fill in its TODOs (see docs/writing-a-backend.md).
    """
    from chainette.cli.skeleton import write_skeleton

    target = write_skeleton(name, Path.cwd())
    typer.echo(
        f"Wrote {target}. Fill in the TODOs in src/chainette_{name}/__init__.py, then: cd {target.name} && pip install -e '.[test]' && pytest"
    )
