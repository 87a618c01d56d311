"""`chainette cache info` and `chainette cache clear`: where the response cache is, what it holds, and emptying it."""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import TYPE_CHECKING

import typer

from chainette.errors import ConfigError

if TYPE_CHECKING:
    from chainette.cache import ResponseCache

app = typer.Typer(help="The response cache: answers of earlier runs, shared by every chain and output directory.", no_args_is_help=True)
DIR_HELP = "The cache's folder (default: $CHAINETTE_CACHE_DIR, else the user cache folder)."
AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _open(folder: Path | None) -> ResponseCache:
    """The store in `folder` (or the default one), or a ConfigError saying why it cannot be read."""
    from chainette.cache import ResponseCache, cache_path, max_size
    from chainette.cache.store import CacheUnavailable

    path = cache_path(folder)
    try:
        return ResponseCache(path, max_bytes=max_size())
    except CacheUnavailable as exc:
        raise ConfigError(
            f"The response cache cannot be read: {exc}. Delete the file, or set CHAINETTE_CACHE_DIR to another folder."
        ) from None


@app.command("info")
def info_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show where the cache is, its size, and per model its entries and hits (answers it gave instead of a request)."""
    store = _open(cache_dir)
    figures = store.figures()
    size = sum(path.stat().st_size for path in store.path.parent.glob(store.path.name + "*") if path.is_file())
    store.close()
    entries = sum(figure.entries for figure in figures)
    if as_json:
        models = [vars(figure) for figure in figures]
        typer.echo(
            json.dumps(
                {"path": str(store.path), "bytes": size, "entries": entries, "max_bytes": store.max_bytes, "models": models}, indent=2
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"{store.path}: {entries} answers, {_size(size)} on disk (cap {_size(store.max_bytes)})", markup=False, soft_wrap=True)
    if figures:
        table = Table("backend", "model", "entries", "hits", "size")
        for figure in figures:
            table.add_row(figure.backend, figure.model, str(figure.entries), str(figure.hits), _size(figure.bytes))
        console.print(table)


@app.command("clear")
def clear_command(
    model: str | None = typer.Option(None, "--model", help="Only this model's answers (as `chainette cache info` names it)."),
    older_than: str | None = typer.Option(None, "--older-than", help="Only answers not used for this long: 30m, 12h, 7d, 2w."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Clear the whole cache without asking."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=DIR_HELP),
) -> None:
    """Delete answers from the cache: all of them, or those of one model, or those unused for a while."""
    unused_for = _age(older_than) if older_than is not None else None
    if model is None and unused_for is None and not yes:
        typer.confirm("Delete every answer in the response cache?", abort=True)
    store = _open(cache_dir)
    removed = store.clear(model=model, unused_for=unused_for)
    store.close()
    typer.echo(f"Removed {removed} answers from {store.path}.")


def _age(text: str) -> float:
    """Seconds in `text`, a number followed by s, m, h, d or w."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if match is None:
        raise ConfigError(f"--older-than {text!r} is not an age: write a number and a unit (s, m, h, d, w), such as 7d or 12h.")
    return float(match[1]) * AGES[match[2]]


def _size(size: int) -> str:
    """`size` bytes in a unit a person reads: 1.4 MB, 20.0 GB."""
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
