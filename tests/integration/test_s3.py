"""Inputs and finished outputs at s3:// URLs, against moto's S3 server on 127.0.0.1 (one per module): every input
format with columns and an id column, errors naming the URL and line, a missing object and missing credentials,
outputs equal to a local run's, a kill -9 then the same command, and --overwrite on a prefix holding no run."""

from __future__ import annotations

from collections import Counter
import io
import json
import os
from pathlib import Path
import signal
import subprocess
import sys

import pytest

from chainette import inputs
from chainette.inputs import Columns
from chainette.run import staging
from chainette.testing import FakeServer

from .conftest import Project, echo, request_key, wait_for
from .s3server import DUMMY_CREDENTIALS, moto_s3

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "reviews"
BUCKET = "chainette-tests"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback with one bucket; yields a filesystem on it."""
    with moto_s3(BUCKET) as fs:
        yield fs


@pytest.fixture(autouse=True)
def staging_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "staging"
    monkeypatch.setenv(staging.DIR_ENV, str(folder))
    return folder


@pytest.fixture
def prefix(s3, tmp_path) -> str:
    """A prefix of the bucket of this test's own."""
    return f"{BUCKET}/{tmp_path.name}"


def put(s3, key: str, data: bytes) -> str:
    s3.pipe(key, data)
    s3.invalidate_cache()
    return f"s3://{key}"


def chainette(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**(os.environ if env is None else env), "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "chainette", *args], capture_output=True, text=True, env=env, timeout=120)


def reviews(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return chainette("run", f"{EXAMPLE}/chain.py:chain", *args, env=env)


def test_every_format_from_s3_with_columns(s3, prefix):
    records = [{"review": "good", "stars": 5, "key": "a"}, {"review": "bad", "stars": 1, "key": "b"}]
    jsonl = put(s3, f"{prefix}/in.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    csv = put(s3, f"{prefix}/in.csv", b"review,stars,key\ngood,5,a\nbad,1,b\n")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer, row_group_size=1)
    parquet = put(s3, f"{prefix}/in.parquet", buffer.getvalue())
    picked = Columns.parse("review=text,key")
    for url, places in ((jsonl, [":1", ":2"]), (csv, [":2", ":3"]), (parquet, ["[0]", "[1]"])):
        rows = list(inputs.read_source(url, picked))
        assert [row.where for row in rows] == [url + place for place in places]
        assert [inputs.validate(row, inputs.decode(row), None) for row in rows] == [
            {"text": "good", "key": "a"},
            {"text": "bad", "key": "b"},
        ]
    assert inputs.fingerprint(jsonl) == inputs.fingerprint(jsonl) != inputs.fingerprint(csv)


def test_a_run_from_s3_uses_the_id_column_and_names_a_bad_line_by_url(s3, prefix, tmp_path):
    url = put(s3, f"{prefix}/in.csv", b'review,key\n"Great kettle, boils fast.",k1\n"Broke, twice.",k2\n')
    out = tmp_path / "out"
    done = reviews("-i", url, "-o", str(out), "--columns", "review=text", "--id-column", "key")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(line)["row_id"] for line in (out / "sentiment" / "000.jsonl").read_text().splitlines()) == ["k1", "k2"]
    bad = put(s3, f"{prefix}/bad.jsonl", b'{"text": "fine"}\n{"text": \n')
    done = reviews("-i", bad, "-o", str(tmp_path / "bad"))
    errors = [json.loads(line) for line in (tmp_path / "bad" / "errors.jsonl").read_text().splitlines()]
    assert [error["message"].split(": not valid JSON")[0] for error in errors] == [f"{bad}:2"]


def test_a_missing_object_and_missing_credentials_stop_the_run_in_one_paragraph(s3, prefix, tmp_path):
    missing = f"s3://{prefix}/none.jsonl"
    done = reviews("-i", missing, "-o", str(tmp_path / "a"))
    assert done.returncode != 0
    assert f"Cannot read input {missing}: no such file or object" in done.stderr and "Traceback" not in done.stderr
    url = put(s3, f"{prefix}/in.jsonl", b'{"text": "x"}\n')
    without = {name: value for name, value in os.environ.items() if name not in DUMMY_CREDENTIALS}
    done = reviews("-i", url, "-o", str(tmp_path / "b"), env=without)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"Cannot read input {url}: access refused or no credentials" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr
    assert "testing" not in done.stderr


def test_outputs_at_s3_are_the_files_a_local_run_writes(s3, prefix, tmp_path, staging_folder):
    local = tmp_path / "local"
    assert reviews("-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(local)).returncode == 0
    url = f"s3://{prefix}/runs/reviews"
    done = reviews("-i", str(EXAMPLE / "inputs.jsonl"), "-o", url)
    assert done.returncode == 0, done.stderr
    assert f"Outputs: {url}/<node>/" in done.stdout and f"Uploaded to {url}; the staging folder" in done.stdout
    s3.invalidate_cache()
    there = {path.removeprefix(f"{prefix}/runs/reviews/"): s3.cat_file(path) for path in s3.find(f"{prefix}/runs/reviews")}
    here = {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    here = {name: data for name, data in here.items() if not name.startswith(".chainette/") or name == ".chainette/manifest.json"}
    assert set(there) == set(here)
    assert all(there[name] == here[name] for name in here if name != "run.json")
    assert json.loads(there["run.json"])["status"] == "completed"
    assert not staging.staging_dir(url).exists() and staging_folder.exists()


def test_a_kill_then_the_same_command_resumes_from_staging_and_uploads_every_row_once(s3, prefix, tmp_path):
    rows, concurrency = 200, 8
    with FakeServer(latency=0.01, respond=echo) as server:
        project = Project(tmp_path, server.base_url, rows, concurrency=concurrency)
        project.inputs = put(s3, f"{prefix}/in.jsonl", project.inputs.read_bytes())
        project.out = f"s3://{prefix}/runs/two"
        process = project.start()
        wait_for(lambda: len(server.chat_requests()) >= 120)
        process.send_signal(signal.SIGKILL)
        process.wait()
        seen = len(server.chat_requests())
        before = Counter(request_key(body) for body in server.chat_requests())
        assert staging.staging_dir(project.out).exists()
        done = project.run()
        assert done.returncode == 0, done.stderr
        again = Counter(request_key(body) for body in server.chat_requests()[seen:])
    assert len(set(before) & set(again)) <= concurrency
    s3.invalidate_cache()
    for step in ("first", "second"):
        lines = [json.loads(line) for path in s3.find(f"{prefix}/runs/two/{step}") for line in s3.cat_file(path).splitlines()]
        assert sorted(int(line["row_id"]) for line in lines) == list(range(rows)), f"{step}: every row exactly once"
        assert all(line["label"] == f"row{line['row_id']}" for line in lines)
    assert s3.cat_file(f"{prefix}/runs/two/errors.jsonl") == b""


def test_overwrite_never_deletes_a_prefix_that_holds_no_chainette_run(s3, prefix):
    put(s3, f"{prefix}/data/keep.csv", b"precious")
    done = reviews("-i", str(EXAMPLE / "inputs.jsonl"), "-o", f"s3://{prefix}/data", "--overwrite")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"Output s3://{prefix}/data is not empty and holds no chainette run" in done.stderr
    s3.invalidate_cache()
    assert s3.find(f"{prefix}/data") == [f"{prefix}/data/keep.csv"] and s3.cat_file(f"{prefix}/data/keep.csv") == b"precious"
