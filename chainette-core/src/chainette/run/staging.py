"""A run whose finished outputs go to a URL (`-o s3://bucket/runs/x`): the local staging directory it works in, the
check of the URL before it starts, and the upload when it ends.

Object stores have no append, truncate or rename, so the resumable run directory stays on local disk, in a folder
derived from the URL (the same command after a kill resumes there). When a session ends without failing (completed,
limited, or stopped gracefully) the run directory's files, without its state but with its manifest, are uploaded to
the URL, replacing what an earlier upload left there; once a completed run is uploaded, its staging folder is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
from pathlib import Path
import shutil
from typing import Any

from pydantic import BaseModel

from chainette.errors import ChainetteError
from chainette.remote import filesystem, join, problem, shown, url_hash
from chainette.results import RunResult
from chainette.run.rundir import MANIFEST, RUN_FILE, STATE_DIR, refuse_other_run

DIR_ENV = "CHAINETTE_STAGING_DIR"


def staging_root() -> Path:
    """Where staging folders live: $CHAINETTE_STAGING_DIR, else `staging` in the platform's user cache folder for chainette."""
    folder = os.environ.get(DIR_ENV) or None
    if folder is None:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("chainette", appauthor=False)) / "staging"
    return Path(folder).expanduser()


def staging_dir(url: str) -> Path:
    """The staging folder of the run whose outputs go to `url` (the same for every spelling with or without a final /)."""
    return staging_root() / url_hash(url)


class RemoteOutput:
    """The URL a run's finished outputs go to, checked when made: new, empty, or holding a chainette run (its
    manifest) of the same chain and inputs, or of any with `overwrite`; anything else is refused and never deleted."""

    def __init__(self, url: str, identity: dict[str, Any], *, overwrite: bool = False):
        self.url = url.rstrip("/")
        self.fs, path = filesystem(self.url, ChainetteError)
        self.path = path.rstrip("/")
        self.staging = staging_dir(self.url)
        self.uploaded: str | None = None
        previous = self._manifest()
        if previous is not None and not overwrite:
            refuse_other_run(self.url, previous, identity)

    def _manifest(self) -> dict[str, Any] | None:
        """The manifest of the run at the URL; None when nothing is there; ChainetteError when something else is."""
        manifest = join(self.path, STATE_DIR, MANIFEST)
        try:
            self.fs.invalidate_cache()
            is_file = self.fs.isfile(self.path)
            text = self.fs.cat_file(manifest) if self.fs.exists(manifest) else None
            held = [] if text is not None or not self.fs.exists(self.path) else self.fs.find(self.path, maxdepth=1, withdirs=True)
        except Exception as exc:
            raise ChainetteError(f"Cannot use output {problem(self.url, exc)}.") from None
        if is_file:
            raise ChainetteError(f"Output {shown(self.url)} is a file: give a folder (a prefix) to upload the run's files under.")
        if held:
            raise ChainetteError(
                f"Output {shown(self.url)} is not empty and holds no chainette run (no {STATE_DIR}/{MANIFEST}): nothing there is deleted "
                "or replaced, with --overwrite (overwrite=True) too. Choose a new or empty folder."
            )
        try:
            return None if text is None else dict(json.loads(text))
        except (ValueError, TypeError):
            raise ChainetteError(
                f"Output {shown(self.url)}: its {STATE_DIR}/{MANIFEST} is not a chainette manifest; choose another folder."
            ) from None

    def upload(self, root: Path, status: str) -> None:
        """Put the run directory `root`'s files at the URL (the manifest first, run.json last) and delete what an
        earlier upload left there that this one did not write; ChainetteError saying how to retry when it fails."""
        files = _published(root)
        targets = {join(self.path, *path.relative_to(root).parts) for path in files}
        try:
            for path in files:
                self.fs.put_file(str(path), join(self.path, *path.relative_to(root).parts))
            self.fs.invalidate_cache()
            stale = [found for found in self.fs.find(self.path) if found.rstrip("/") not in targets]
            if stale:
                self.fs.rm(stale)
        except Exception as exc:
            raise ChainetteError(
                f"Uploading the run's outputs failed: {problem(self.url, exc)}. Every finished row is kept in the staging folder "
                f"{root}: run the same command again to upload them."
            ) from None
        self.uploaded = status

    def clean(self) -> None:
        """Remove the staging folder once a completed run is uploaded (a limited or stopped one keeps it, to resume)."""
        if self.uploaded == "completed":
            shutil.rmtree(self.staging, ignore_errors=True)

    def result(self, stats: dict[str, Any], models: Mapping[str, type[BaseModel] | None]) -> UploadedRun:
        return UploadedRun(self, stats, models)


def _published(root: Path) -> list[Path]:
    """The files of the run directory `root` that readers need: all but its state folder's (its manifest apart, which
    marks the URL as a chainette run), the manifest first and run.json last."""
    manifest, run_file = root / STATE_DIR / MANIFEST, root / RUN_FILE
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.relative_to(root).parts[0] != STATE_DIR and path != run_file)
    return [manifest, *files, *([run_file] if run_file.exists() else [])]


class UploadedRun(RunResult):
    """A run whose outputs were uploaded to a URL: its figures, and where its files are (`url`, and `output_dir` the
    staging folder, removed once a completed run is uploaded: read the outputs at the URL then)."""

    def __init__(self, output: RemoteOutput, stats: dict[str, Any], models: Mapping[str, type[BaseModel] | None]):
        super().__init__(output.staging, models)
        self.url = output.url
        self._stats = stats
        self._removed = output.uploaded == "completed"

    @property
    def stats(self) -> dict[str, Any]:
        return self._stats

    def records(self, step_id: str) -> list[dict[str, Any]]:
        self._check_kept()
        return super().records(step_id)

    @property
    def errors(self) -> list[dict[str, Any]]:
        self._check_kept()
        return super().errors

    @property
    def flattened(self) -> list[dict[str, Any]]:
        self._check_kept()
        return super().flattened

    def note(self) -> str:
        """Where the outputs went and what became of the staging folder, in a sentence (for the summary)."""
        if self._removed:
            return f"Uploaded to {shown(self.url)}; the staging folder {self.output_dir} was removed."
        return (
            f"Uploaded what is done so far to {shown(self.url)}; the staging folder {self.output_dir} keeps the run "
            "until it completes: the same command goes on with it."
        )

    def _check_kept(self) -> None:
        if self._removed:
            raise ChainetteError(
                f"The run's outputs were uploaded to {shown(self.url)} and its staging folder removed: read them there "
                f"(for example pandas.read_json('{shown(self.url)}/flattened/000.jsonl', lines=True))."
            )

    def __repr__(self) -> str:
        return f"UploadedRun(url={self.url!r}, steps={list(self._models)})"
