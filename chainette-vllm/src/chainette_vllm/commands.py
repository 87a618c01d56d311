"""`chainette warmup`, `chainette kill` and `chainette ps`: vLLM servers that outlive a run, so that later runs reuse them.

The work is in `chainette_vllm.warm`; this module only reads the command line and prints.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import typer

from chainette.engines import EngineConfig, EngineOptions, get_engine, load_engines_from_yaml
from chainette.errors import ConfigError
from chainette.secrets import public_url
from chainette_vllm.options import VllmOptions


def add_commands(app: typer.Typer) -> None:
    app.command("warmup")(warmup_command)
    app.command("kill")(kill_command)
    app.command("ps")(ps_command)


def warmup_command(
    source: str = typer.Argument(..., help="A chain (path/to/file.py:attr or package.module:attr) or an engines YAML file."),
    names: list[str] | None = typer.Option(
        None, "--engine", metavar="NAME", help="An engine to start (repeatable). Default: every lazy=False engine."
    ),
    engines: Path | None = typer.Option(
        None, "--engines", "-e", metavar="FILE", help="A YAML file of engines; replaces same-named engines (as in `chainette run`)."
    ),
) -> None:
    """Start the vLLM servers of SOURCE's engines and leave them running; later runs reuse them (stop them with `chainette kill`)."""
    from chainette_vllm.warm import warm_up

    for config in _selected(source, names, engines):
        if not isinstance(config.options, VllmOptions):
            typer.echo(f"{config.name}: skipped (backend {config.backend}, not vllm)", err=True)
        elif config.endpoint:
            shown = ", ".join(public_url(url) or "" for url in config.urls)
            typer.echo(f"{config.name}: skipped (it uses its endpoint {shown})", err=True)
        else:
            typer.echo(f"{config.name}  {warm_up(cast('EngineConfig[VllmOptions]', config))}")


def kill_command(
    names: list[str] | None = typer.Argument(None, metavar="[NAME]...", help="Engines whose warm servers to stop."),
    everything: bool = typer.Option(False, "--all", help="Stop every server started by warmup."),
) -> None:
    """Stop servers started by `chainette warmup`."""
    from chainette_vllm.warm import stop_warm

    if not names and not everything:
        raise ConfigError("Name the engines whose servers to stop, or pass --all (`chainette ps` lists them).")
    removed = stop_warm(None if everything else names)
    for entry in removed:
        typer.echo(f"Stopped {entry['engine']} (pid {entry['pid']}, {entry['url']})")
    if not removed:
        typer.echo("No server started by warmup was recorded.")


def ps_command() -> None:
    """List the vLLM servers started by `chainette warmup` that are still running."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from chainette_vllm.warm import list_warm

    entries = list_warm()
    if not entries:
        typer.echo("No vLLM server started by warmup is running.")
        return
    table = Table()
    for column in ("engine", "model", "url", "pid", "uptime"):
        table.add_column(column)
    for entry in entries:
        cells = (entry["engine"], entry["model"], entry["url"], str(entry["pid"]), _uptime(entry["started_at"]))
        table.add_row(*map(Text, cells))
    Console().print(table)


def _selected(source: str, names: list[str] | None, overlay: Path | None) -> list[EngineConfig[EngineOptions]]:
    """The engines `names` of SOURCE (a chain or an engines YAML), or its lazy=False ones; `overlay` replaces same-named engines."""
    from chainette.cli.loading import load_chain

    is_yaml = source.endswith((".yaml", ".yml"))
    chain = None if is_yaml else load_chain(source)
    found = [config.name for config in load_engines_from_yaml(source)] if is_yaml else []
    if overlay is not None:
        load_engines_from_yaml(overlay)
    configs = chain.engines() if chain is not None else {name: get_engine(name) for name in found}
    if names:
        unknown = [name for name in names if name not in configs]
        if unknown:
            raise ConfigError(f"{source} has no engine named {', '.join(unknown)} (its engines: {', '.join(sorted(configs)) or 'none'}).")
        return [configs[name] for name in dict.fromkeys(names)]
    persistent = [config for config in configs.values() if not config.lazy]
    if not persistent:
        raise ConfigError(
            f"None of the engines of {source} has lazy=False ({', '.join(sorted(configs)) or 'none'}); name those to start with --engine NAME."
        )
    return persistent


def _uptime(started_at: str) -> str:
    seconds = int((datetime.now(timezone.utc) - datetime.fromisoformat(started_at)).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
