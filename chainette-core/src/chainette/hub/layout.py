"""What a push reads and publishes: the completed run read back from its directory, its configs (one per output
folder with data, `flattened` first, `errors` when asked), the card and files that make the dataset, the check that
no file holds a secret, and a dry run's folder. Also which files of an earlier push a new one deletes, and whether a
given chain is the one that made the run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
import json
import os
from pathlib import Path, PurePosixPath
import shutil
from typing import TYPE_CHECKING, Any

import orjson

from chainette import graph, parquet
from chainette.engines import registered_secrets
from chainette.errors import ChainetteError
from chainette.hub.card import render_card
from chainette.hub.constants import CARD, ERRORS_CONFIG, ERRORS_FILE, FLATTENED, RECORDS
from chainette.nodes import Apply, Step
from chainette.run.appends import output_files
from chainette.run.rundir import RunPaths, output_path
from chainette.secrets import MIN_LENGTH, redact

if TYPE_CHECKING:
    from chainette.chain import Chain

TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class Run:
    """A completed run read back from its directory: graph.json and run.json as data."""

    root: Path
    graph: dict[str, Any]
    figures: dict[str, Any]


@dataclass(frozen=True)
class Config:
    """One dataset config: its name, what its rows are, its data files (paths in the repository) and their row count."""

    name: str
    about: str
    files: tuple[str, ...]
    rows: int

    @property
    def pattern(self) -> str:
        """The `data_files` path of the card: every numbered file of the folder, or the one file."""
        folder, _, name = self.files[0].rpartition("/")
        return f"{folder}/*{PurePosixPath(name).suffix}" if folder else name


@dataclass(frozen=True)
class Dataset:
    """What one push publishes: the card's text, and the run's files keyed by their path in the repository."""

    repo_id: str
    card: str
    files: dict[str, Path]
    configs: tuple[Config, ...]

    def paths(self) -> list[str]:
        """Every path in the repository this push writes, the card included."""
        return sorted([CARD, *self.files])


@dataclass(frozen=True)
class Pushed:
    """What a push did: the paths and configs it published, where (a dry run's folder, or the repository and
    commit URLs), and the files of an earlier push it deleted."""

    repo_id: str
    paths: tuple[str, ...]
    configs: tuple[str, ...]
    folder: Path | None = None
    url: str | None = None
    commit_url: str | None = None
    deleted: tuple[str, ...] = ()


def read_run(output_dir: str | os.PathLike[str]) -> Run:
    """The run in `output_dir`, which must hold graph.json and a run.json whose status is "completed"."""
    root = output_path(output_dir, "The run directory")
    if not root.is_dir():
        raise ChainetteError(f"{root} is not a directory: pass the output directory of a `chainette run` (its -o OUT).")
    missing = [name for name in RECORDS if not (root / name).is_file()]
    if missing:
        raise ChainetteError(
            f"{root} holds no finished chainette run ({' and '.join(missing)} missing): pass the output directory "
            "a `chainette run` wrote (its -o OUT), once the run has completed."
        )
    recorded, figures = (_read_json(root / name) for name in RECORDS)
    status = figures.get("status")
    if status != "completed":
        why = f": {redact(str(figures['error']), known_secrets(recorded))}" if figures.get("error") else ""
        raise ChainetteError(
            f"The run in {root} did not complete (status {status}{why}), so it is not published. Run the same "
            "`chainette run` command again to resume it, then push it once it completes."
        )
    return Run(root, recorded, figures)


def known_secrets(recorded: Mapping[str, Any]) -> frozenset[str]:
    """The secrets this process can know of: every registered engine's, the keys the run's engines read from the
    environment (graph.json's `api_key_env`), and a Hub token in HF_TOKEN."""
    names = {engine.get("api_key_env") for engine in recorded.get("engines", {}).values()} | set(TOKEN_ENV)
    from_env = {os.environ[name] for name in names if name and os.environ.get(name)}
    return registered_secrets() | from_env


def build_dataset(run: Run, repo_id: str, *, include_errors: bool, chain: Chain | None, secrets: frozenset[str]) -> Dataset:
    """The repository's contents for `run`: its configs, the files they and the records need, and the card.

    A node whose folder holds no data file has no config; a file that holds a secret is a ChainetteError.
    """
    configs = _configs(run, include_errors)
    if not configs:
        raise ChainetteError(f"The run in {run.root} wrote no output rows, so there is nothing to publish.")
    files = {name: run.root / name for name in RECORDS}
    files.update({path: run.root / path for config in configs for path in config.files})
    for path, source in files.items():
        _check_secret_free(source, path, secrets)
    details = _chain_nodes(chain, run) if chain is not None else None
    card = redact(render_card(run, repo_id, configs, details), secrets)
    return Dataset(repo_id, card, files, tuple(configs))


def write_folder(dataset: Dataset, folder: Path) -> Pushed:
    """Write the card and the files into `folder` (new or empty), laid out as in the repository."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ChainetteError(f"{folder} is not an empty folder: a dry run writes into a new or empty one. Choose another, or empty it.")
    folder.mkdir(parents=True, exist_ok=True)
    for path, source in dataset.files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (folder / CARD).write_text(dataset.card, encoding="utf-8")
    return Pushed(dataset.repo_id, tuple(dataset.paths()), tuple(c.name for c in dataset.configs), folder=folder)


def _configs(run: Run, include_errors: bool) -> list[Config]:
    """The configs with data: `flattened` first (the default), each step's and apply's in graph order, `errors` if asked."""
    about = {
        FLATTENED: "One row per row that made it through the whole chain: `row_id`, `chain_input.<field>`, `<step>.<field>`.",
    }
    for node in run.graph["nodes"]:
        if node["kind"] in ("step", "apply"):
            model = node.get("output_model")
            what = f"`{model}`'s fields" if model else "the rows it passed on"
            about[node["id"]] = f"The outputs of {node['kind']} `{node['id']}`: {what}, with `row_id`."
    configs = [_folder_config(run.root, name, text) for name, text in about.items()]
    rows = _count_rows(run.root / ERRORS_FILE) if include_errors and (run.root / ERRORS_FILE).is_file() else 0
    if rows:
        if ERRORS_CONFIG in about:
            raise ChainetteError(
                f"The chain has a node named '{ERRORS_CONFIG}', which the errors config would shadow: push without --include-errors."
            )
        text = "The rows that failed: `row_id`, `step_id`, `error_type`, `message` and the `raw` answer."
        configs.append(Config(ERRORS_CONFIG, text, (ERRORS_FILE,), rows))
    return [config for config in configs if config is not None]


def _folder_config(root: Path, name: str, about: str) -> Config | None:
    """The config of one output folder: its numbered JSONL or Parquet files (None when it has none)."""
    if Path(name).name != name or name.startswith("."):
        return None
    folder = root / name
    found = [*output_files(folder), *sorted(folder.glob("[0-9][0-9][0-9]*.parquet"))]
    if not found:
        return None
    return Config(name, about, tuple(f"{name}/{path.name}" for path in found), sum(_count_rows(path) for path in found))


def _count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        pa = parquet.require(f"Publishing {path}")
        with open(path, "rb") as handle:
            rows: int = pa.parquet.ParquetFile(handle).metadata.num_rows
            return rows
    return sum(chunk.count(b"\n") for chunk in _chunks(path))


def _check_secret_free(source: Path, shown: str, secrets: Iterable[str]) -> None:
    """A ChainetteError (naming the file, never the value) when `source` holds a secret, as it is or JSON-escaped."""
    needles = {form for secret in secrets if len(secret) >= MIN_LENGTH for form in (secret.encode(), orjson.dumps(secret)[1:-1])}
    if not needles:
        return
    overlap = max(len(needle) for needle in needles) - 1
    tail = b""
    for chunk in _parquet_text(source) if source.suffix == ".parquet" else _chunks(source):
        window = tail + chunk
        if any(needle in window for needle in needles):
            raise ChainetteError(
                f"{shown} holds the value of a secret (an engine's key or the Hub token), so the run is not published. "
                "Remove it from that file, then push again."
            )
        tail = window[-overlap:] if overlap else b""


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            yield chunk


def _parquet_text(path: Path) -> Iterator[bytes]:
    """A Parquet file's rows as JSON lines, so that its text values can be searched."""
    for row in parquet.read_rows(path):
        yield orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def _chain_nodes(chain: Chain, run: Run) -> dict[str, Step | Apply]:
    """The chain's steps and applies by id, once it is known to be the chain that made `run` (same graph; same
    prompts, models and sampling when the run's manifest is still there)."""
    shape = graph.describe(chain.nodes, {})
    if [shape["nodes"], shape["edges"]] != [run.graph["nodes"], run.graph["edges"]]:
        raise _not_this_chain(chain, run, "its nodes or edges differ from graph.json's")
    manifest = RunPaths(run.root).manifest
    if manifest.is_file() and _read_json(manifest).get("chain") not in (None, graph.fingerprint(chain.nodes)):
        raise _not_this_chain(chain, run, "its prompts, models or sampling changed since")
    return {node.id: node for node in graph.iter_nodes(chain.nodes)}


def _not_this_chain(chain: Chain, run: Run, why: str) -> ChainetteError:
    return ChainetteError(
        f"The chain '{chain.name}' is not the one that made the run in {run.root}: {why}. Pass the chain the run "
        "was made with, or push without it (the card then shows no prompts or output schemas)."
    )


def stale_paths(existing: Iterable[str], dataset: Dataset, run: Run) -> list[str]:
    """The repository's files that a push of `run` owns (its records, errors.jsonl, its node and flattened folders)
    but that this push does not write: left by an earlier push, they would mix into this run's configs."""
    owned_files = {CARD, ERRORS_FILE, *RECORDS}
    owned_folders = {FLATTENED, *(node["id"] for node in run.graph["nodes"] if node["kind"] in ("step", "apply"))}
    written = set(dataset.paths())
    return sorted(
        path
        for path in existing
        if path not in written and (path in owned_files or ("/" in path and path.partition("/")[0] in owned_folders))
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChainetteError(f"Cannot read {path}: {exc}. Is it the file a chainette run wrote?") from None
    if not isinstance(data, dict):
        raise ChainetteError(f"Cannot read {path}: it holds no JSON object. Is it the file a chainette run wrote?")
    return data
