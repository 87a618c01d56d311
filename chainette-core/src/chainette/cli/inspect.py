"""`chainette inspect`: the chain's graph as a tree, a Mermaid flowchart or JSON, with engines, models and checks; or,
with --inputs, the prompts rendered for the first rows of an input file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from chainette.cli.loading import load_chain
from chainette.errors import ConfigError

if TYPE_CHECKING:
    from chainette.chain import Chain


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
    inputs: str | None = typer.Option(
        None,
        "--inputs",
        "-i",
        help="Show each step's prompts rendered for the first rows of these inputs (as `run` reads them) instead of the graph; nothing is sent.",
    ),
    rows: int = typer.Option(1, "--rows", min=1, help="With --inputs: how many of the first input rows to render."),
    columns: str | None = typer.Option(None, "--columns", help="With --inputs: input fields to keep, renamed with =, as for `run`."),
    id_column: str | None = typer.Option(
        None, "--id-column", help="With --inputs: the input column holding each row's own id, as for `run`."
    ),
) -> None:
    """Show CHAIN: each node's models and engine. Templates and model compatibility are checked on load, engines after.

    With --inputs, show instead the system and user prompts of every step for the first --rows input rows. Later steps
    render with placeholder answers made from the earlier nodes' output models (no request is sent, no apply runs).
    """
    from chainette.engines import load_engines_from_yaml

    loaded = load_chain(chain)
    if engines is not None:
        load_engines_from_yaml(engines)
    if inputs is not None:
        _show_prompts(loaded, inputs, output_format, rows=rows, columns=columns, id_column=id_column)
    elif output_format is Format.tree:
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


def _show_prompts(loaded: Chain, inputs: str, output_format: Format, *, rows: int, columns: str | None, id_column: str | None) -> None:
    """Print the prompts of the first `rows` input rows, as text (--format tree) or JSON; registered secrets masked."""
    from chainette.cli.prompts import prompts_json, prompts_text
    from chainette.engines import registered_secrets
    from chainette.preview import first_prompts
    from chainette.secrets import redact

    if output_format is Format.mermaid:
        raise ConfigError("--inputs shows prompts as text (--format tree, the default) or JSON (--format json), not as mermaid.")
    found = list(first_prompts(loaded.nodes, loaded.input_model, inputs, rows=rows, columns=columns, id_column=id_column))
    text = prompts_json(found) if output_format is Format.json else prompts_text(found, inputs)
    typer.echo(redact(text, registered_secrets()))
