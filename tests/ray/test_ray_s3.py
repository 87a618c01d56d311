"""`--on ray -i s3://… -o s3://…` against moto's S3 server on 127.0.0.1: the driver reads the input through
chainette.inputs and uploads the finished run as a local run does (chainette.run.staging), and what lands in the bucket
is the files and results of a local run over a local copy of the input."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess

import pytest

from chainette.outcome import EXIT_SOME_ROWS_FAILED
from chainette.run import staging

from ..integration.invariants import snapshot, write_inputs
from ..integration.s3server import moto_s3
from .conftest import environment
from .test_ray_runner import BLOCK_ROWS, command, run_env

pytestmark = pytest.mark.ray

ROWS = 1000
BUCKET = "chainette-ray-tests"
"""A bucket of this module's own: moto keeps its buckets in the test process across servers (tests/integration/test_s3.py
makes its own)."""


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback with this module's bucket; yields a filesystem on it."""
    with moto_s3(BUCKET) as fs:
        yield fs


def files(out: Path) -> set[str]:
    """The run directory's files a reader sees (the run's internal state but its manifest left out)."""
    names = {str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()}
    return {name for name in names if not name.startswith(".chainette/") or name == ".chainette/manifest.json"}


def test_a_ray_run_from_s3_to_s3_equals_a_local_run(cluster, s3, tmp_path, monkeypatch):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, ROWS)
    local = tmp_path / "local"
    done = subprocess.run(command(inputs, local, "--no-cache"), env=environment("local"), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    prefix = f"{BUCKET}/{tmp_path.name}"
    source = f"s3://{prefix}/in.jsonl"
    s3.put(str(inputs), source)
    url = f"s3://{prefix}/runs/torture"
    monkeypatch.setenv(staging.DIR_ENV, str(tmp_path / "staging"))
    args = command(source, url, "--no-cache", "--on", f"ray?block_rows={BLOCK_ROWS}")  # type: ignore[arg-type]
    done = subprocess.run(args, env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    s3.invalidate_cache()
    there = tmp_path / "there"
    s3.get(f"{prefix}/runs/torture", str(there), recursive=True)
    assert files(there) == files(local)
    read_here = snapshot(there)
    read_here["errors"] = [{**error, "message": error["message"].replace(source, str(inputs))} for error in read_here["errors"]]
    assert read_here == snapshot(local)  # an invalid row's message names the URL it was read from
    assert json.loads((there / "run.json").read_text())["status"] == "completed"
    assert not staging.staging_dir(url).exists()
