"""The run directory: where each of its files lives, whether a run may start, resume or overwrite there, and its lock.

`RunPaths` is the layout alone (every path of a run directory, nothing opened or checked), for whatever reads a
run; `RunDir` is a run's own directory, its identity checked and its lock held until `close`. The order in which
a run writes these files, and why a crash leaves them consistent, is chainette.run.appends's docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import json
import os
from pathlib import Path
import shutil
from typing import Any

from chainette import parquet
from chainette.errors import ChainetteError, ConfigError
from chainette.run.appends import write_atomically
from chainette.runlock import RunLock

OUTPUT_FORMATS = ("jsonl", "parquet")
LAYOUT = 2
"""The version of the state folder's layout, kept in the manifest: 2 since rows stream between nodes (a group's frontier
is a commit log). A run another layout wrote is not resumed."""

# The entries a run directory holds besides its nodes' output folders. MANIFEST marks a folder as a run directory:
# --overwrite deletes nothing else. Backends write the logs of the servers they start in LOGS_DIR.
STATE_DIR = ".chainette"
MANIFEST = "manifest.json"
FLATTENED = "flattened"
ERRORS_FILE = "errors.jsonl"
GRAPH_FILE = "graph.json"
RUN_FILE = "run.json"
LOGS_DIR = "logs"
# A node id or join alias equal to one of these would clash with the run directory's own entry (ids are identifiers,
# so only the folders can clash; the files are listed too, so that a new entry cannot be forgotten).
RUN_DIR_ENTRIES = frozenset({STATE_DIR, FLATTENED, ERRORS_FILE, GRAPH_FILE, RUN_FILE, LOGS_DIR})
# The state folder's own entries, besides each node's frontier and done marker and each group's (`group0.joined`: a frontier and done marker too).
SESSIONS_FILE = "sessions.json"
BATCHES_DIR = "batches"
STAGED_OUTPUTS = "outputs"
STAGED_FLATTENED = "flattened.staged"


class RunPaths:
    """Every path of the run directory `root`: its user-facing files, and the state folder that resuming needs."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / STATE_DIR
        self.manifest = self.state / MANIFEST
        self.errors = root / ERRORS_FILE
        self.sessions = self.state / SESSIONS_FILE
        self.batches = self.state / BATCHES_DIR

    def frontier(self, node_id: str) -> Path:
        """A node's frontier: the commit log of the rows it decided, and the rows it passes on."""
        return self.state / f"{node_id}.jsonl"

    def done_marker(self, node_id: str) -> Path:
        """The marker (with its row counts) of a node an earlier session finished."""
        return self.state / f"{node_id}.done"

    def done_markers(self) -> Iterator[Path]:
        return self.state.glob("*.done")

    def batch_folder(self, step_id: str) -> Path:
        """Where a batch step's files and journal live."""
        return self.batches / step_id

    def scratch(self, name: str) -> Path:
        """A scratch index's file (chainette.run.scratch), removed once used."""
        return self.state / f"{name}.sqlite"

    def staged_flattened(self) -> Path:
        """Where a runner gathering the flattened table's lines during a session (chainette-ray) keeps them until it ends."""
        return self.state / STAGED_FLATTENED


def output_path(value: str | os.PathLike[str], what: str = "Output directory") -> Path:
    """`value` as a path, refusing an empty one (which would mean the current directory to some and nothing to others)."""
    if not os.fspath(value).strip():
        raise ConfigError(
            f"{what} is empty (''): give the path of a directory, new, empty or holding a run (an unset shell variable in -o \"$OUT\" gives '')."
        )
    return Path(value)


class RunDir(RunPaths):
    """One run's output directory: its paths, whether the run starts afresh or resumes, and its lock.

    A directory holding a run of the same chain and inputs is resumed; one holding another run is refused
    unless `overwrite`, and one holding anything but a run (its MANIFEST) is refused even then. The run owns the
    directory (runlock.RunLock) from here to `close`: a second process is refused. With `output_format="parquet"`
    the nodes' JSONL output files live under `.chainette/outputs/` and `export_parquet` writes the user-facing
    Parquet files.
    """

    def __init__(self, root: str | os.PathLike[str], identity: dict[str, Any], *, overwrite: bool = False, output_format: str = "jsonl"):
        if output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"Output format '{output_format}' is not one of: {', '.join(OUTPUT_FORMATS)}.")
        if output_format == "parquet":
            parquet.require("--format parquet (output_format='parquet')")
        super().__init__(output_path(root))
        self.output_format = output_format
        _check_place(self, overwrite)
        self._lock = RunLock(self.state, "a chainette run")
        try:
            self.resumed = self._prepare({**identity, "format": output_format, "layout": LAYOUT}, overwrite)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let go of the directory: another run may use it from now on."""
        self._lock.release()

    def _prepare(self, identity: dict[str, Any], overwrite: bool) -> bool:
        if self.manifest.exists() and not overwrite:
            previous = json.loads(self.manifest.read_text(encoding="utf-8"))
            if previous.get("layout", 1) != LAYOUT:
                raise ChainetteError(
                    f"Output directory {self.root} holds a run that another version of chainette wrote (state layout "
                    f"{previous.get('layout', 1)}, this one reads {LAYOUT}): its finished outputs can be read, but it cannot be "
                    "resumed. Finish it with the version that started it, choose another directory, or pass --overwrite "
                    "(overwrite=True) to start afresh."
                )
            refuse_other_run(str(self.root), previous, identity)
            return True
        try:
            if overwrite:
                _empty_run_dir(self.root, keep=self._lock.path)
            write_atomically(self.manifest, json.dumps(identity).encode())
        except OSError as exc:
            raise ChainetteError(f"Output directory {self.root} is not writable: {exc.strerror} ({exc.filename}).") from None
        return False

    def node_folder(self, node_id: str) -> Path:
        """Where a node's (or flattened's) JSONL output files live: the user-facing folder, or under the state with Parquet."""
        if self.output_format == "parquet":
            return self.state / STAGED_OUTPUTS / node_id
        return self.root / node_id

    def export_parquet(self, names: Iterable[str]) -> None:
        """Write the JSONL outputs of each of `names` as Parquet files in its user-facing folder (a no-op for JSONL runs)."""
        if self.output_format == "parquet":
            for name in names:
                parquet.export_folder(self.node_folder(name), self.root / name)

    def write_json(self, name: str, data: Any) -> None:
        """Write `name` in the run directory as indented JSON, whole (never half a file after a crash)."""
        write_atomically(self.root / name, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def refuse_other_run(where: str, previous: dict[str, Any], identity: dict[str, Any]) -> None:
    """ChainetteError when the manifest `previous` found at `where` is of another chain, other inputs or another
    output format than `identity` (the run about to start, its format included)."""
    for key, what in (("chain", "another chain (or a changed one)"), ("inputs", "other inputs")):
        if None not in (previous.get(key), identity.get(key)) and previous[key] != identity[key]:
            if key == "chain":
                what = _changed_nodes(previous.get("nodes"), identity.get("nodes")) or what
            raise ChainetteError(
                f"Output directory {where} holds a run of {what}. Choose another directory, or pass --overwrite (overwrite=True) to start afresh."
            )
    written = previous.get("format", "jsonl")
    if written != identity["format"]:
        raise ChainetteError(
            f"Output directory {where} holds a run written as {written}, not {identity['format']}. "
            f"Resume it with --format {written} (output_format='{written}'), choose another directory, or pass --overwrite (overwrite=True) to start afresh."
        )


def _check_place(paths: RunPaths, overwrite: bool) -> None:
    """Refuse, before anything is created or deleted, an output path that is no directory, a link to overwrite
    through, or a directory that is neither empty nor a run (with `overwrite` too: it deletes runs only)."""
    root = paths.root
    try:
        if root.is_symlink() and overwrite:
            raise ChainetteError(
                f"Output directory {root} is a symbolic link (to {os.readlink(root)}): --overwrite (overwrite=True) does not "
                "delete through a link, and nothing was deleted. Pass the directory it points to if that is the run to replace."
            )
        if root.is_symlink() and not root.exists():
            raise ChainetteError(
                f"Output directory {root} is a symbolic link to {os.readlink(root)}, which does not exist: create it, or choose another directory."
            )
        if root.exists() and not root.is_dir():
            raise ChainetteError(
                f"Output directory {root} is not a directory: choose a directory (new, empty, or holding a run of this chain to resume)."
            )
        if root.is_dir() and not paths.manifest.exists() and any(entry.name != STATE_DIR for entry in root.iterdir()):
            if overwrite:
                raise ChainetteError(
                    f"Output directory {root} is not empty and holds no chainette run (no {STATE_DIR}/{MANIFEST}): --overwrite "
                    "(overwrite=True) deletes only a run directory, and nothing was deleted. Choose a new or empty directory."
                )
            raise ChainetteError(f"Output directory {root} is not empty and holds no chainette run. Choose a new or empty directory.")
    except OSError as exc:
        raise ChainetteError(f"Cannot use output directory {root}: {exc.strerror} ({exc.filename}).") from None


def _empty_run_dir(root: Path, keep: Path) -> None:
    """Delete everything in the run directory `root` but its state folder's file `keep`: the lock the caller holds
    (deleted, a new lock file there would let a second run in)."""
    for entry in root.iterdir():
        if entry.name == STATE_DIR and not entry.is_symlink():
            for inner in entry.iterdir():
                if inner != keep:
                    _delete(inner)
        else:
            _delete(entry)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _changed_nodes(before: dict[str, str] | None, now: dict[str, str] | None) -> str:
    """What a refusal says changed, when both manifests keep per-node fingerprints and some of the same ids differ
    (else nothing): "a changed chain: 'a', 'b' changed since (...)"."""
    if not before or not now:
        return ""
    changed = [f"'{node_id}'" for node_id, fingerprint in now.items() if node_id in before and before[node_id] != fingerprint]
    if not changed:
        return ""
    return (
        f"a changed chain: {', '.join(changed)} changed since it started "
        "(a step's prompts, models or sampling, or an apply function's code, which decided the rows done so far)"
    )
