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
    from chainette.cache.database import CacheUnavailable, ModelFigures

app = typer.Typer(help="The response cache: answers of earlier runs, shared by every chain and output directory.", no_args_is_help=True)
DIR_HELP = "The cache's folder (default: $CHAINETTE_CACHE_DIR, else the user cache folder)."
AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _open(path: Path) -> ResponseCache:
    """The store at `path` (which exists); CacheUnavailable when it cannot be read."""
    from chainette.cache import ResponseCache, max_size

    return ResponseCache(path, max_bytes=max_size())


def _unreadable(problem: CacheUnavailable) -> ConfigError:
    """The error that says why the cache cannot be read, and what to do."""
    from chainette.cache.database import CacheDamaged, removal_command

    if isinstance(problem, CacheDamaged):
        advice = f"`{removal_command(problem.path)}` removes it: its answers are lost, and later runs ask again and store new ones."
    else:
        advice = "Delete the file, or set CHAINETTE_CACHE_DIR to another folder."
    return ConfigError(f"The response cache cannot be read: {problem}. {advice}")


@app.command("info")
def info_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show where the cache is, its size, and per model its entries and hits (answers it gave instead of a request).
    Reads the whole file, to say whether it is damaged; creates nothing where there is no cache."""
    from chainette.cache import cache_path, max_size
    from chainette.cache.database import CacheUnavailable

    path = cache_path(cache_dir)
    exists = path.exists()
    try:
        figures = _figures(path) if exists else []
    except CacheUnavailable as exc:
        raise _unreadable(exc) from None
    size = sum(part.stat().st_size for part in path.parent.glob(path.name + "*") if part.is_file()) if exists else 0
    entries = sum(figure.entries for figure in figures)
    cap = max_size()
    if as_json:
        models = [vars(figure) for figure in figures]
        summary = {"path": str(path), "exists": exists, "bytes": size, "entries": entries, "max_bytes": cap, "models": models}
        typer.echo(json.dumps(summary, indent=2))
        return
    if not exists:
        typer.echo(f"No response cache at {path}: no run has stored an answer there.")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"{path}: {entries} answers, {_size(size)} on disk (cap {_size(cap)})", markup=False, soft_wrap=True)
    if figures:
        table = Table("backend", "model", "entries", "hits", "size")
        for figure in figures:
            table.add_row(figure.backend, figure.model, str(figure.entries), str(figure.hits), _size(figure.bytes))
        console.print(table)


def _figures(path: Path) -> list[ModelFigures]:
    """Per model, what the cache file at `path` holds, once the file is checked sound (CacheDamaged if not)."""
    store = _open(path)
    try:
        store.check()
        return store.figures()
    finally:
        store.close()


@app.command("clear")
def clear_command(
    model: str | None = typer.Option(None, "--model", help="Only this model's answers (as `chainette cache info` names it)."),
    older_than: str | None = typer.Option(None, "--older-than", help="Only answers not used for this long: 30m, 12h, 7d, 2w."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Clear the whole cache without asking."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=DIR_HELP),
) -> None:
    """Delete answers from the cache: all of them, or those of one model, or those unused for a while. A damaged cache
    file is removed whole (by a clear of all answers)."""
    from chainette.cache import cache_path
    from chainette.cache.database import CacheDamaged, CacheUnavailable, removal_command, remove

    unused_for = _age(older_than) if older_than is not None else None
    path = cache_path(cache_dir)
    if not path.exists():
        typer.echo(f"No response cache at {path}: nothing to clear.")
        return
    everything = model is None and unused_for is None
    if everything and not yes:
        typer.confirm("Delete every answer in the response cache?", abort=True)
    try:
        removed = _clear(path, model, unused_for)
    except CacheDamaged as exc:
        if not everything:
            raise ConfigError(
                f"The response cache cannot be read: {exc}, so no answer can be picked out of it. "
                f"`{removal_command(path)}` (without --model or --older-than) removes the whole file."
            ) from None
        remove(path)
        typer.echo(f"Removed the damaged response cache {path}.")
        return
    except CacheUnavailable as exc:
        raise _unreadable(exc) from None
    typer.echo(f"Removed {removed} answers from {path}.")


def _clear(path: Path, model: str | None, unused_for: float | None) -> int:
    """Delete the answers of `model` not used for `unused_for` from the cache file at `path`; return how many."""
    store = _open(path)
    try:
        return store.clear(model=model, unused_for=unused_for)
    finally:
        store.close()


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
