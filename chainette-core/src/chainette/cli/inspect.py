"""`chainette inspect`: the chain's graph as a tree, a Mermaid flowchart or JSON, with engines, models and checks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from chainette.cli.loading import load_chain


class Format(str, Enum):
    tree = "tree"
    mermaid = "mermaid"
    json = "json"


def inspect_command(
    chain: str = typer.Argument(..., help="The chain: path/to/file.py:attr, package.module:attr or chain.yaml."),
    engines: Path | None = typer.Option(None, "--engines", "-e", help="A YAML file of engines; replaces same-named engines."),
    output_format: Format = typer.Option(
        Format.tree, "--format", "-f", help="tree (readable), mermaid (a flowchart to paste into Markdown) or json (what graph.json holds)."
    ),
) -> None:
    """Show CHAIN: each node's models and engine. Templates and model compatibility are checked on load, engines after."""
    from chainette.engines import load_engines_from_yaml

    loaded = load_chain(chain)
    if engines is not None:
        load_engines_from_yaml(engines)
    if output_format is Format.tree:
        from rich.console import Console

        from chainette.cli.tree import chain_tree

        Console().print(chain_tree(loaded))
        loaded.engines()
    elif output_format is Format.mermaid:
        from chainette.cli.mermaid import chain_mermaid

        loaded.engines()
        typer.echo(chain_mermaid(loaded), nl=False)
    else:
        import json

        typer.echo(json.dumps(loaded.describe(), indent=2))
