"""Finished outputs at a URL, through fsspec's in-memory filesystem (`memory://`): the run works in a local
staging folder, uploads the run directory's files when it ends, resumes from the staging folder, and never deletes
at the URL what is not a chainette run (tests/integration/test_s3.py runs the same against a local S3 server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainette import Chain, register_engine
from chainette.errors import ChainetteError
from chainette.run import staging

from .test_run import echo, label_step, rows

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def memory():
    """fsspec's in-memory filesystem, emptied after the test."""
    fs = fsspec.filesystem("memory")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]


@pytest.fixture
def engine(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv(staging.DIR_ENV, str(tmp_path / "staging"))
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    return backend


def chain() -> Chain:
    return Chain(name="c", steps=[label_step()])


def uploaded(fs, prefix: str) -> dict[str, bytes]:
    """Every file under `prefix` of the in-memory filesystem, by its path under it."""
    return {path.removeprefix(f"/{prefix}/"): fs.cat_file(path) for path in fs.find(f"/{prefix}")}


def local_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_a_run_to_a_url_uploads_what_a_local_run_writes_and_removes_its_staging_folder(engine, memory, tmp_path):
    local = tmp_path / "local"
    chain().run(rows(5), output_dir=local, progress=False)
    result = chain().run(rows(5), output_dir="memory://runs/x", progress=False)
    there = uploaded(memory, "runs/x")
    published = {
        name: data for name, data in local_files(local).items() if not name.startswith(".chainette/") or name.endswith("manifest.json")
    }
    assert set(there) == set(published)
    assert {name: there[name] for name in there if name != "run.json"} == {
        name: published[name] for name in published if name != "run.json"
    }
    assert result.stats["status"] == "completed" and result.stats["input"]["rows"] == 5
    assert not staging.staging_dir("memory://runs/x").exists()
    assert "was removed" in result.note()
    with pytest.raises(ChainetteError, match="uploaded to memory://runs/x and its staging folder removed"):
        result["label"]


def test_a_limited_run_keeps_its_staging_folder_and_the_same_call_goes_on_with_it(engine, memory):
    first = chain().run(rows(6), output_dir="memory://runs/y", progress=False, limit=2)
    assert first.stats["status"] == "limited" and len(first["label"]) == 2
    assert staging.staging_dir("memory://runs/y/").exists()
    assert len(engine.requests) == 2
    chain().run(rows(6), output_dir="memory://runs/y/", progress=False)
    assert len(engine.requests) == 6
    outputs = memory.cat_file("/runs/y/label/000.jsonl").decode().splitlines()
    assert sorted(line.split('"row_id":"')[1].split('"')[0] for line in outputs) == [str(i) for i in range(6)]
    assert not staging.staging_dir("memory://runs/y").exists()


def test_a_url_holding_no_chainette_run_is_refused_and_never_deleted(engine, memory):
    memory.pipe("/data/keep.csv", b"precious")
    for overwrite in (False, True):
        with pytest.raises(ChainetteError, match="^Output memory://data is not empty and holds no chainette run"):
            chain().run(rows(2), output_dir="memory://data", progress=False, overwrite=overwrite)
    assert memory.cat_file("/data/keep.csv") == b"precious"
    memory.pipe("/file.jsonl", b"{}")
    with pytest.raises(ChainetteError, match="^Output memory://file.jsonl is a file"):
        chain().run(rows(2), output_dir="memory://file.jsonl", progress=False)


def test_a_url_holding_another_run_is_replaced_only_with_overwrite(engine, memory):
    chain().run(rows(3), output_dir="memory://runs/z", progress=False)
    memory.pipe("/runs/z/label/001.jsonl", b"left by an older run\n")
    with pytest.raises(ChainetteError, match="^Output directory memory://runs/z holds a run of other inputs"):
        chain().run(rows(4), output_dir="memory://runs/z", progress=False)
    chain().run(rows(4), output_dir="memory://runs/z", progress=False, overwrite=True)
    there = uploaded(memory, "runs/z")
    assert "label/001.jsonl" not in there
    assert len(there["label/000.jsonl"].splitlines()) == 4


def test_a_failed_upload_keeps_the_staging_folder_and_says_how_to_retry(engine, memory, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError("Access Denied")

    with monkeypatch.context() as patch:
        patch.setattr(type(memory), "put_file", refuse)
        with pytest.raises(
            ChainetteError, match=r"^Uploading the run's outputs failed: memory://runs/w: access refused .* run the same command again"
        ):
            chain().run(rows(3), output_dir="memory://runs/w", progress=False)
    folder = staging.staging_dir("memory://runs/w")
    assert (folder / "label" / "000.jsonl").exists()
    calls = len(engine.requests)
    result = chain().run(rows(3), output_dir="memory://runs/w", progress=False)
    assert len(engine.requests) == calls and result.stats["status"] == "completed"
    assert len(memory.cat_file("/runs/w/label/000.jsonl").splitlines()) == 3


def test_a_parquet_run_uploads_its_parquet_files_and_not_its_staged_jsonl(engine, memory):
    pytest.importorskip("pyarrow")
    chain().run(rows(3), output_dir="memory://runs/p", progress=False, output_format="parquet")
    there = uploaded(memory, "runs/p")
    assert {"label/000.parquet", "flattened/000.parquet", ".chainette/manifest.json", "run.json"} <= set(there)
    assert not [name for name in there if name.endswith(".jsonl") and name != "errors.jsonl"]
