"""`chainette inspect`: the chain's graph as a tree, with engines, models and checks."""

from __future__ import annotations

from pathlib import Path

import typer

from chainette.cli.loading import load_chain


def inspect_command(
    chain: str = typer.Argument(..., help="The chain: path/to/file.py:attr or package.module:attr."),
    engines: Path | None = typer.Option(None, "--engines", "-e", help="A YAML file of engines; replaces same-named engines."),
) -> None:
    """Show CHAIN as a tree: each node's models and engine. Templates and model compatibility are checked on load."""
    from rich.console import Console

    from chainette.cli.tree import chain_tree
    from chainette.engines import load_engines_from_yaml

    loaded = load_chain(chain)
    if engines is not None:
        load_engines_from_yaml(engines)
    Console().print(chain_tree(loaded))
    loaded.engines()
