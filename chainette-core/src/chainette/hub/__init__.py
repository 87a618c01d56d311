"""A finished run published to the Hugging Face Hub as a dataset repository, in one commit, or written to a
local folder instead (a dry run, with no network and no token).

What goes up: the card (README.md), graph.json, run.json, `flattened/` (the default config), each step's and
apply's output folder (one config each) and, only when asked, errors.jsonl (the config `errors`); never
`.chainette/` nor `logs/`. The card is made from graph.json and run.json, plus the prompts and output schemas
of the chain that made the run when it is given; every secret this process knows of is masked in it, and a
file that holds one is refused, not uploaded. huggingface_hub (chainette-core[hub]) is imported only to
upload, and finds the token itself (HF_TOKEN, or `hf auth login`).

The package: `layout` reads the run and lays out the dataset (and checks it for secrets), `card` renders the card,
`upload` commits it to the Hub; `push()` here ties them together.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
import os
from pathlib import Path
import re
from typing import TYPE_CHECKING

from chainette.errors import ChainetteError
from chainette.hub.card import graph_mermaid, render_card
from chainette.hub.constants import CARD, ERRORS_CONFIG, ERRORS_FILE, FLATTENED, RECORDS
from chainette.hub.layout import TOKEN_ENV, Config, Dataset, Pushed, Run, build_dataset, known_secrets, read_run, write_folder
from chainette.hub.upload import INSTALL, upload
from chainette.run.rundir import RunPaths, output_path
from chainette.runlock import RunLock, holder, in_use

if TYPE_CHECKING:
    from chainette.chain import Chain

__all__ = [
    "CARD",
    "ERRORS_CONFIG",
    "ERRORS_FILE",
    "FLATTENED",
    "INSTALL",
    "RECORDS",
    "TOKEN_ENV",
    "Config",
    "Dataset",
    "Pushed",
    "Run",
    "build_dataset",
    "graph_mermaid",
    "known_secrets",
    "parse_repo",
    "push",
    "read_run",
    "render_card",
    "upload",
    "write_folder",
]

_REPO_ID = re.compile(r"^(?:hf:)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)$")


def push(
    output_dir: str | os.PathLike[str],
    repo: str,
    *,
    private: bool = False,
    dry_run: str | os.PathLike[str] | None = None,
    include_errors: bool = False,
    message: str | None = None,
    chain: Chain | None = None,
) -> Pushed:
    """Publish the completed run in `output_dir` as the dataset `repo` ("org/name" or "hf:org/name") in one commit.

    `dry_run` names a new (or empty) folder to write the same card and files to instead: no network, no token.
    `private` creates the repository private (an existing public one is refused); `include_errors` adds the
    `errors` config; `message` is the commit's summary. Given the `chain` that made the run, the card shows
    its prompts and output schemas. ChainetteError for anything the user must fix; no secret in any of it.
    """
    repo_id = parse_repo(repo)
    root = output_path(output_dir, "The run directory")
    with _owning(root):
        run = read_run(root)
        secrets = known_secrets(run.graph)
        dataset = build_dataset(run, repo_id, include_errors=include_errors, chain=chain, secrets=secrets)
        if dry_run is not None:
            return write_folder(dataset, output_path(dry_run, "The dry run's folder (--dry-run)"))
        return upload(dataset, run, private=private, message=message or _default_message(run, dataset), secrets=secrets)


def _owning(root: Path) -> AbstractContextManager[object]:
    """The run directory's lock for as long as a push reads it: a run working in it refuses the push, and a run
    started meanwhile is refused. Without a state folder no run can start in the directory: no lock. A state folder
    this process may not write to (a read-only copy, another user's run) is only checked for a holder."""
    state = RunPaths(root).state
    if state.is_dir() and os.access(state, os.W_OK):
        return RunLock(state, "a chainette push")
    found = holder(state) if state.is_dir() else None
    if found is not None:
        raise in_use(root, found)
    return nullcontext()


def parse_repo(repo: str) -> str:
    """The repository id in `repo` ("org/name" or "hf:org/name"), or a ChainetteError saying what is expected."""
    match = _REPO_ID.match(repo.strip())
    if match is None or ".." in repo:
        raise ChainetteError(
            f"'{repo}' is not a dataset repository: write it org/name or hf:org/name "
            "(letters, digits, '-', '_' and '.'), with your user name or an organisation as org."
        )
    return match.group(1)


def _default_message(run: Run, dataset: Dataset) -> str:
    rows = next((c.rows for c in dataset.configs if c.name == FLATTENED), 0)
    return f"Publish the {run.graph.get('chain', 'chain')} run ({rows} rows) with chainette"
