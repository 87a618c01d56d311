"""Inputs at filesystem URLs, through fsspec's in-memory filesystem (`memory://`): every format, columns, the id
column, errors naming the URL and line, and the fingerprint that resuming compares (tests/integration/test_s3.py runs
the same against a local S3 server)."""

from __future__ import annotations

import io
import sys

import pytest

from chainette import inputs
from chainette.errors import InputError
from chainette.inputs import Columns
from chainette.remote import RemoteFile, is_url

from .test_import import imported_after

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def memory():
    """fsspec's in-memory filesystem, emptied after the test; `put(name, bytes)` stores a file and gives its URL."""
    fs = fsspec.filesystem("memory")

    def put(name: str, data: bytes) -> str:
        fs.pipe(f"/data/{name}", data)
        return f"memory://data/{name}"

    yield put
    for path in [path for path in fs.store if path.startswith("/data/")]:
        del fs.store[path]


def read(url: str, columns: str | None = None) -> list[tuple[str, dict]]:
    picked = Columns.parse(columns)
    return [(row.where, inputs.validate(row, inputs.decode(row), None)) for row in inputs.read_source(url, picked)]


def test_urls_are_told_from_paths_and_datasets():
    assert is_url("s3://bucket/key.jsonl") and is_url("hf://datasets/org/name/train.jsonl") and is_url("memory://a/b.csv")
    assert not is_url("data/rows.jsonl") and not is_url("hf:imdb:train") and not is_url("C:/rows.jsonl")
    assert inputs.hf_source("hf://datasets/org/name/train.jsonl") is None
    assert inputs.hf_source("hf:imdb:train") is not None


def test_jsonl_at_a_url_with_columns(memory):
    url = memory("rows.jsonl", b'{"review": "good", "stars": 5, "id": "a"}\n\n{"review": "bad", "stars": 1, "id": "b"}\n')
    assert read(url, "review=text,id") == [(f"{url}:1", {"text": "good", "id": "a"}), (f"{url}:3", {"text": "bad", "id": "b"})]


def test_json_array_and_csv_at_urls(memory):
    array = memory("rows.json", b'[{"text": "x"}, {"text": "y"}]')
    assert read(array) == [(f"{array}[0]", {"text": "x"}), (f"{array}[1]", {"text": "y"})]
    table = memory("rows.csv", b'text,stars\nfine,4\n"two\nlines",2\n')
    assert read(table, "text") == [(f"{table}:2", {"text": "fine"}), (f"{table}:3", {"text": "two\nlines"})]


def test_parquet_at_a_url_by_row_groups(memory):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"text": f"t{i}", "n": i} for i in range(25)]), buffer, row_group_size=10)
    url = memory("rows.parquet", buffer.getvalue())
    rows = read(url, "n")
    assert [value for _, value in rows] == [{"n": i} for i in range(25)]
    assert rows[24][0] == f"{url}[24]"


def test_a_bad_line_is_named_by_url_and_line(memory):
    url = memory("bad.jsonl", b'{"text": "ok"}\n{"text": \n')
    rows = list(inputs.read_source(url))
    with pytest.raises(ValueError, match=f"^{url}:2: not valid JSON"):
        inputs.decode(rows[1])


def test_a_file_that_is_not_utf8_is_named_by_url_and_line(memory):
    url = memory("latin.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=f"^{url}:2: the file is not UTF-8 text"):
        list(inputs.read_source(url))


def test_a_missing_object_or_column_stops_before_the_run(memory):
    with pytest.raises(InputError, match="^Cannot read input memory://data/none.jsonl: no such file or object"):
        inputs.read_source("memory://data/none.jsonl")
    url = memory("rows.csv", b"text\nx\n")
    with pytest.raises(InputError, match=f"^{url}: no column 'label'"):
        inputs.read_source(url, Columns.parse("label"))


def test_an_unknown_scheme_says_so():
    with pytest.raises(InputError, match="^nosuch://x/rows.jsonl: .*Give a local path, or a URL"):
        inputs.read_source("nosuch://x/rows.jsonl")


def test_a_missing_filesystem_package_says_what_to_install(monkeypatch):
    def missing(url):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(InputError, match=r"^s3://b/rows.jsonl: s3:// URLs need s3fs, which is not installed: pip install s3fs\.$"):
        inputs.read_source("s3://b/rows.jsonl")


def test_fingerprint_hashes_the_bytes_when_the_filesystem_names_no_version(memory):
    url = memory("rows.jsonl", b'{"text": "x"}\n')
    first = inputs.fingerprint(url)
    assert first is not None and inputs.fingerprint(url, Columns.parse("text")) != first
    memory("rows.jsonl", b'{"text": "y"}\n')
    assert inputs.fingerprint(url) != first
    memory("rows.jsonl", b'{"text": "x"}\n')
    assert inputs.fingerprint(url) == first


def test_fingerprint_uses_the_version_the_filesystem_gives_without_reading(memory, monkeypatch):
    url = memory("rows.jsonl", b'{"text": "x"}\n')
    versions = iter(['"etag-1"', '"etag-1"', '"etag-2"'])
    monkeypatch.setattr(type(fsspec.filesystem("memory")), "info", lambda self, path, **kw: {"size": 14, "ETag": next(versions)})
    monkeypatch.setattr(RemoteFile, "open", lambda self: pytest.fail("the fingerprint read the object"))
    first = inputs.fingerprint(url)
    assert inputs.fingerprint(url) == first and inputs.fingerprint(url) != first


def test_importing_chainette_does_not_import_fsspec():
    assert "fsspec" not in imported_after("import chainette; import chainette.inputs")
    assert "fsspec" in sys.modules  # this module imported it; the check above ran in a fresh interpreter


def test_a_url_s_credentials_never_reach_a_message(tmp_path):
    """Credentials written into a URL (user:password@, a token in the query string) are masked in every error."""
    url = "memory://alice:hunter2secret@bucket/missing.jsonl?token=qwerty12345"
    with pytest.raises(InputError) as raised:
        list(inputs.read_source(url))
    text = str(raised.value)
    assert "hunter2secret" not in text and "qwerty12345" not in text and "alice" not in text
    assert "missing.jsonl" in text
