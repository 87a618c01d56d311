"""Data formats: JSONL, JSON, CSV, Parquet and Hugging Face inputs, --columns, Parquet outputs (read back,
resumed after a kill, from the command line), and the errors a user can fix."""

from __future__ import annotations

import json
from pathlib import Path
import re
import shutil
import sys
import types

from pydantic import BaseModel
import pytest

from chainette import Chain, ChainetteError, apply, inputs, register_engine
from chainette.errors import InputError
from chainette.inputs import Columns, hf_source

from .test_cli import EXAMPLE, chainette
from .test_import import imported_after
from .test_resume import lines, two_steps
from .test_run import label_step, rows


class Rated(BaseModel):
    text: str
    stars: int


def echo(request, attempt):
    """Answer with the row's text (newlines included) as label."""
    text = re.search(r"<<(.*?)>>", request.messages[-1]["content"], re.DOTALL).group(1)
    return json.dumps({"label": text, "score": 0.5})


def one_step(**kw) -> Chain:
    return Chain(name="c", steps=[label_step(**kw)])


def labels(result) -> list[str]:
    return [r.label for r in result["label"]]


@pytest.fixture
def engine(scripted):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    return backend


def write_parquet(path: Path, records: list[dict]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


# Inputs


@pytest.mark.parametrize("name", ["in.jsonl", "in.ndjson", "in.JSONL"])
def test_jsonl_input(engine, tmp_path, name):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows(3)))
    assert labels(one_step().run(path, output_dir=tmp_path / "o")) == ["row0", "row1", "row2"]


def test_json_array_input(engine, tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(rows(3), indent=2))
    assert labels(one_step().run(path, output_dir=tmp_path / "o")) == ["row0", "row1", "row2"]


def test_csv_input_quoted_comma_unicode_and_bad_rows(engine, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        'text,stars\n"Great, really great",5\nnaïve café ☕,4\n"two\nlines",3\nunquoted, comma,2\n,1\n',
        encoding="utf-8",
    )
    result = one_step().run(path, output_dir=tmp_path / "o")
    assert labels(result) == ["Great, really great", "naïve café ☕", "two\nlines", ""]
    assert [r["row_id"] for r in result.records("label")] == ["0", "1", "2", "4"]
    [error] = result.errors
    assert error["row_id"] == "3" and error["step_id"] == "chain_input"
    assert error["message"] == f"{path}:6: 3 fields but the header has 2 (is a value with a comma unquoted?)"


def test_csv_values_stay_strings_and_the_input_model_converts_them(engine, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("text,stars\ngood,5\nbad,many\n")
    result = one_step(input_model=Rated).run(path, output_dir=tmp_path / "o")
    assert labels(result) == ["good"]
    assert result.flattened[0]["chain_input.stars"] == 5
    [error] = result.errors
    assert error["message"].startswith(f"{path}:3: does not match Rated: field 'stars'")


def test_csv_with_a_byte_order_mark(engine, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("\ufefftext\nhello\n".encode())
    assert labels(one_step().run(path, output_dir=tmp_path / "o")) == ["hello"]


ROWS_AS_TEXT = {
    "jsonl": '{"text": "caf\u00e9"}\n{"text": "b"}\n',
    "json": '[{"text": "caf\u00e9"},\n {"text": "b"}]\n',
    "csv": "text\ncaf\u00e9\nb\n",
}


@pytest.mark.parametrize("extension", ROWS_AS_TEXT)
def test_utf8_with_or_without_a_byte_order_mark_is_read(engine, tmp_path, extension):
    for encoding in ("utf-8", "utf-8-sig"):
        path = tmp_path / f"{encoding}.{extension}"
        path.write_bytes(ROWS_AS_TEXT[extension].encode(encoding))
        assert labels(one_step().run(path, output_dir=tmp_path / encoding)) == ["caf\u00e9", "b"]


@pytest.mark.parametrize("extension", ROWS_AS_TEXT)
@pytest.mark.parametrize(
    ("encode", "expected"),
    [
        (lambda text: text.encode("utf-16"), r"in\.{ext}: the file is UTF-16 text .*iconv -f UTF-16 -t UTF-8 "),
        (lambda text: text.encode("utf-16-le"), r"in\.{ext}:1: the file is not UTF-8 text: byte 0x00 at offset 1 is a NUL byte"),
        (lambda text: text.encode("latin-1"), r"in\.{ext}:{line}: the file is not UTF-8 text: byte 0xe9 at offset \d+ .*Windows-1252"),
        (lambda text: bytes(range(256)) * 4, r"in\.{ext}:1: the file is not UTF-8 text: byte 0x00 at offset 0"),
    ],
    ids=["utf-16", "utf-16-without-bom", "latin-1", "binary"],
)
def test_a_file_that_is_not_utf8_is_one_paragraph_naming_file_and_line(tmp_path, extension, encode, expected):
    (tmp_path / f"in.{extension}").write_bytes(encode(ROWS_AS_TEXT[extension]))
    done = chainette("run", f"{EXAMPLE}/chain.py:chain", "-i", f"in.{extension}", "-o", "out", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = 2 if extension == "csv" else 1
    assert re.search(expected.format(ext=extension, line=line), done.stderr), done.stderr


@pytest.mark.parametrize("extension", ["jsonl", "csv"])
def test_a_bad_byte_far_into_the_file_names_its_line(engine, tmp_path, extension):
    path = tmp_path / f"in.{extension}"
    texts = ["\u00e9" * i + "x" for i in range(400)]
    good = (
        "text\n" + "".join(f"{text}\n" for text in texts)
        if extension == "csv"
        else "".join(json.dumps({"text": text}) + "\n" for text in texts)
    )
    assert len(good.encode()) > 2 * inputs.TEXT_CHUNK
    path.write_bytes(good.encode() + b"caf\xe9\n")
    with pytest.raises(InputError, match=rf"in\.{extension}:{good.count(chr(10)) + 1}: the file is not UTF-8 text: byte 0xe9"):
        one_step().run(path, output_dir=tmp_path / "o")


def test_a_file_ending_inside_a_character_names_its_last_line(engine, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "caf\xc3')
    with pytest.raises(InputError, match=r"in\.jsonl:2: the file is not UTF-8 text: byte 0xc3 at offset 27 starts a character"):
        one_step().run(path, output_dir=tmp_path / "o")


def test_json_nested_too_deep_is_refused_naming_file_and_line(engine, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "in.json").write_text(f'[{{"text": "a"}},\n {{"text": {deep}}}]')
    done = chainette("run", f"{EXAMPLE}/chain.py:chain", "-i", "in.json", "-o", "out", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "in.json:2: the JSON is nested more than 200 levels deep" in done.stderr
    (tmp_path / "in.jsonl").write_text(f'{{"text": "a"}}\n{{"text": {deep}}}\n')
    done = chainette("run", f"{EXAMPLE}/chain.py:chain", "-i", "in.jsonl", "-o", "jsonl", cwd=tmp_path)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    [error] = [json.loads(line) for line in (tmp_path / "jsonl" / "errors.jsonl").read_text().splitlines()]
    assert error["message"] == "in.jsonl:2: not valid JSON: depth limit exceeded (column 1034)"


@pytest.mark.parametrize("extension", ["jsonl", "json"])
def test_a_row_nested_deeper_than_json_can_be_written_is_an_invalid_row(engine, tmp_path, extension):
    nested = "[" * 200 + "]" * 200
    path = tmp_path / f"in.{extension}"
    text = f'{{"text": "a", "x": {nested[1:-1]}}}\n{{"text": "b", "x": {nested}}}'
    path.write_text(text if extension == "jsonl" else f"[{text.replace(chr(10), ',')}]")
    result = one_step().run(path, output_dir=tmp_path / "o", columns="text,x")
    assert labels(result) == ["a"]
    [error] = result.errors
    where = f"{path}:2" if extension == "jsonl" else f"{path}[1]"
    assert error["message"] == f"{where}: nested more than 200 levels deep (lists and objects inside each other); check the row"


def test_parquet_input_streamed_with_row_index(engine, tmp_path, monkeypatch):
    from chainette import parquet

    monkeypatch.setattr(parquet, "BATCH_ROWS", 2)
    path = write_parquet(tmp_path / "in.parquet", [*rows(4), {"text": None}, {"text": "é"}])
    result = one_step().run(path, output_dir=tmp_path / "o")
    assert labels(result) == ["row0", "row1", "row2", "row3", "é"]
    [error] = result.errors
    assert error["message"].startswith(f"{path}[4]: does not match Text: field 'text'")


def test_unknown_extension_lists_the_supported_ones(engine, tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match=r"extension '\.txt'.*Supported: \.jsonl, \.ndjson, \.json, \.csv, \.parquet, \.pq") as caught:
        one_step().run(path, output_dir=tmp_path / "o")
    assert "hf:name" in str(caught.value)
    assert not (tmp_path / "o").exists(), "the input is checked before the output directory is made"


def test_missing_optional_libraries_name_the_extra(engine, tmp_path, monkeypatch):
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(InputError, match=r'pip install "chainette-core\[parquet\]"'):
        one_step().run(tmp_path / "in.parquet", output_dir=tmp_path / "a")
    with pytest.raises(InputError, match=r'pip install "chainette-core\[datasets\]"'):
        one_step().run("hf:imdb", output_dir=tmp_path / "b")
    with pytest.raises(ChainetteError, match=r'--format parquet .*pip install "chainette-core\[parquet\]"'):
        one_step().run(rows(1), output_dir=tmp_path / "c", output_format="parquet")


def test_not_a_parquet_file(engine, tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "in.parquet").write_text("text\nhello\n")
    with pytest.raises(InputError, match="Cannot read .*in.parquet as a Parquet file"):
        one_step().run(tmp_path / "in.parquet", output_dir=tmp_path / "o")


# Hugging Face datasets, through a fake `datasets` module


class FakeStream:
    """What `load_dataset(..., streaming=True)` returns: an iterable of dicts with `column_names`."""

    def __init__(self, records: list[dict]):
        self.records = records
        self.column_names = list(records[0])

    def __iter__(self):
        return iter(self.records)


@pytest.fixture
def fake_datasets(monkeypatch):
    calls: list[tuple[tuple, dict]] = []

    def load_dataset(path, name=None, *, split=None, streaming=False):
        calls.append(((path, name), {"split": split, "streaming": streaming}))
        if path == "missing/dataset":
            raise FileNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        return FakeStream([{"review": f"hf{i}", "stars": i} for i in range(3)])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hf_dataset_streamed_with_columns(engine, tmp_path, fake_datasets):
    result = one_step().run("hf:org/reviews:plain:test", output_dir=tmp_path / "o", columns="review=text")
    assert fake_datasets == [(("org/reviews", "plain"), {"split": "test", "streaming": True})]
    assert labels(result) == ["hf0", "hf1", "hf2"]
    assert result.flattened[0]["chain_input.text"] == "hf0" and "chain_input.stars" not in result.flattened[0]


def test_hf_dataset_errors(engine, tmp_path, fake_datasets):
    with pytest.raises(InputError, match=r"no column 'body'.*available are: review, stars"):
        one_step().run("hf:org/reviews", output_dir=tmp_path / "a", columns="body=text")
    with pytest.raises(InputError, match="Cannot load the Hugging Face dataset 'missing/dataset'.*doesn't exist on the Hub"):
        one_step().run("hf:missing/dataset", output_dir=tmp_path / "b")
    with pytest.raises(InputError, match="write a Hugging Face dataset as hf:name"):
        one_step().run("hf:a:b:c:d", output_dir=tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_hf_dataset_rows_say_where_they_come_from(engine, tmp_path, monkeypatch):
    stream = FakeStream([{"text": "ok"}, {"text": 3.5}])
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: stream))
    result = one_step().run("hf:imdb:test", output_dir=tmp_path / "o")
    assert result.errors[0]["message"].startswith("hf:imdb[test][1]: does not match Text")


def test_hf_dataset_with_the_real_library_on_a_local_folder(engine, tmp_path, monkeypatch):
    """`datasets.load_dataset` also takes a local folder; offline, no hub involved."""
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    pytest.importorskip("datasets")
    folder = tmp_path / "reviews"
    folder.mkdir()
    write_parquet(folder / "train.parquet", [{"review": "x", "stars": 1}])
    write_parquet(folder / "test.parquet", [{"review": f"t{i}", "stars": i} for i in range(3)])
    result = one_step().run(f"hf:{folder}:test", output_dir=tmp_path / "o", columns="review=text")
    assert labels(result) == ["t0", "t1", "t2"]


def test_hf_source_names():
    assert hf_source("hf:imdb") == hf_source("hf:imdb:train")
    assert (hf_source("hf:imdb:test").config, hf_source("hf:imdb:test").split) == (None, "test")
    assert (hf_source("hf:glue:mrpc:validation").config, hf_source("hf:glue:mrpc:validation").split) == ("mrpc", "validation")
    assert hf_source("hf:glue::test").config is None
    assert hf_source("data.jsonl") is None
    for bad in ("hf:", "hf:name:", "hf:a:b:c:d"):
        with pytest.raises(InputError):
            hf_source(bad)


def test_hf_identity_is_the_dataset_name_and_split(engine, tmp_path, fake_datasets):
    one_step().run("hf:org/reviews:test", output_dir=tmp_path / "o", columns="review=text")
    with pytest.raises(ChainetteError, match="holds a run of other inputs"):
        one_step().run("hf:org/reviews:train", output_dir=tmp_path / "o", columns="review=text")
    assert one_step().run("hf:org/reviews:test", output_dir=tmp_path / "o", columns="review=text").stats["resumed"]


# --columns


def test_columns_pick_and_rename(engine, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"review": "good", "stars": 5, "noise": 1}\n{"review": "bad", "stars": 1}\n{"stars": 2}\n')
    result = one_step(input_model=Rated).run(path, output_dir=tmp_path / "o", columns="review=text,stars")
    assert labels(result) == ["good", "bad"]
    assert {k: v for k, v in result.flattened[0].items() if k.startswith("chain_input")} == {
        "chain_input.text": "good",
        "chain_input.stars": 5,
    }
    [error] = result.errors
    assert error["row_id"] == "2" and error["error_type"] == "invalid_input"
    assert error["message"] == f"{path}:3: no column 'review' (the row has: stars)"


def test_columns_keep_only_the_named_fields_from_python_objects(engine, tmp_path):
    data = [{"text": "a", "secret": "x"}, {"text": "b", "secret": "y"}]
    result = one_step().run(data, output_dir=tmp_path / "o", columns=["text"])
    assert [sorted(k for k in row if k.startswith("chain_input")) for row in result.flattened] == [["chain_input.text"]] * 2


def test_column_absent_from_a_header_stops_before_the_run(engine, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("body,stars\nhello,3\n")
    with pytest.raises(
        InputError, match=r"no column 'review', asked for by the columns 'review=text'\. The columns available are: body, stars"
    ):
        one_step().run(path, output_dir=tmp_path / "o", columns="review=text")
    assert not (tmp_path / "o").exists()
    parquet_path = write_parquet(tmp_path / "in.parquet", [{"body": "hello", "stars": 3}])
    with pytest.raises(InputError, match="no column 'text'.*available are: body, stars"):
        one_step().run(parquet_path, output_dir=tmp_path / "o", columns="text")


def test_parquet_input_reads_only_the_picked_columns(engine, tmp_path):
    path = write_parquet(tmp_path / "in.parquet", [{"body": f"b{i}", "blob": "x" * 10, "id": i} for i in range(3)])
    result = one_step().run(path, output_dir=tmp_path / "o", columns={"body": "text"})
    assert labels(result) == ["b0", "b1", "b2"]
    assert [k for k in result.flattened[0] if k.startswith("chain_input")] == ["chain_input.text"]


def test_column_spec_forms_and_mistakes():
    assert Columns.parse("text, label").pairs == (("text", "text"), ("label", "label"))
    assert (
        Columns.parse("review=text,stars") == Columns.parse(["review=text", "stars"]) == Columns.parse({"review": "text", "stars": "stars"})
    )
    assert Columns.parse(None) is None
    with pytest.raises(InputError, match="every column needs a name"):
        Columns.parse("text,,label")
    with pytest.raises(InputError, match="text would be set twice"):
        Columns.parse("review=text,text")


def test_columns_are_part_of_the_input_identity(engine, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a", "body": "b"}\n')
    one_step().run(path, output_dir=tmp_path / "o")
    with pytest.raises(ChainetteError, match="holds a run of other inputs"):
        one_step().run(path, output_dir=tmp_path / "o", columns="body=text")


# Parquet outputs


def test_parquet_outputs_layout_and_read_back(engine, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    jsonl = two_steps().run(rows(30), output_dir=tmp_path / "j")
    out = tmp_path / "p"
    result = two_steps().run(rows(30), output_dir=out, output_format="parquet")
    assert sorted(p.name for p in out.iterdir()) == [".chainette", "again", "errors.jsonl", "flattened", "graph.json", "label", "run.json"]
    for folder in ("label", "again", "flattened"):
        assert [p.name for p in (out / folder).iterdir()] == ["000.parquet"]
        assert (out / ".chainette" / "outputs" / folder / "000.jsonl").exists()
    assert result["label"] == jsonl["label"] and result["again"] == jsonl["again"]
    assert result.records("again") == jsonl.records("again")
    assert result.flattened == jsonl.flattened
    table = pq.read_table(out / "label")
    assert table.schema.field("label").type == pa.string() and table.schema.field("score").type == pa.float64()
    assert sorted(table.column("row_id").to_pylist(), key=int) == [str(i) for i in range(30)]
    assert pq.read_table(out / "flattened").num_rows == 30
    assert result.stats["status"] == "completed"


def test_parquet_outputs_open_in_pandas(engine, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    two_steps().run(rows(5), output_dir=tmp_path / "o", output_format="parquet")
    frame = pd.read_parquet(tmp_path / "o" / "flattened")
    assert sorted(frame["label.label"]) == sorted(f"row{i}" for i in range(5))
    assert len(pd.read_parquet(tmp_path / "o" / "label")) == 5


def test_types_that_drift_between_batches_are_unified_or_kept_as_json(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from chainette import parquet

    monkeypatch.setattr(parquet, "BATCH_ROWS", 2)

    def shape(item):
        i = int(item["n"])
        return {
            "number": i if i < 2 else i + 0.5,  # int64 then float64: unified to float64
            "late": None if i < 2 else f"v{i}",  # null then string
            "mixed": i if i % 2 else f"s{i}",  # number and text: JSON text
            "empty": {},  # a struct without fields cannot be stored: JSON text
            **({"extra": [i]} if i == 3 else {}),  # only in one row: null elsewhere
        }

    chain = Chain(name="c", steps=[apply(shape)])
    result = chain.run([{"n": i} for i in range(5)], output_dir=tmp_path / "o", output_format="parquet")
    schema = pq.read_schema(tmp_path / "o" / "shape" / "000.parquet")
    assert dict(zip(schema.names, schema.types, strict=True)) == {
        "number": pa.float64(),
        "late": pa.string(),
        "mixed": pa.string(),
        "empty": pa.string(),
        "row_id": pa.string(),
        "row_index": pa.int64(),
        "extra": pa.list_(pa.int64()),
    }
    assert [r["mixed"] for r in result.records("shape")] == ["s0", 1, "s2", 3, "s4"], "JSON-text fields read back as they were"
    assert [r["empty"] for r in result.records("shape")] == [{}] * 5
    assert [r["extra"] for r in result.records("shape")] == [None, None, None, [3], None]
    assert pq.read_table(tmp_path / "o" / "shape").column("mixed").to_pylist()[:2] == ['"s0"', "1"]


def test_export_writes_one_parquet_file_per_journal_file_and_removes_stale_ones(tmp_path):
    pytest.importorskip("pyarrow")
    from chainette import parquet
    from chainette.run.appends import read_outputs

    source, target = tmp_path / "journal", tmp_path / "out"
    source.mkdir()
    target.mkdir()
    (source / "000.jsonl").write_text('{"a": 1, "row_id": "0"}\n')
    (source / "001.jsonl").write_text('{"a": 2, "row_id": "1"}\n')
    (source / "002.jsonl").write_text("")
    (target / "007.parquet").write_text("stale")
    parquet.export_folder(source, target)
    assert sorted(p.name for p in target.iterdir()) == ["000.parquet", "001.parquet"]
    assert list(read_outputs(target)) == [{"a": 1, "row_id": "0"}, {"a": 2, "row_id": "1"}]


def simulate_kill_during_label_with_parquet(out: Path) -> None:
    """What `kill -9` in the middle of step 'label' of a Parquet run leaves: the journals cut as in
    test_resume, and no Parquet export yet (except a stale flattened one from an earlier pass)."""
    state = out / ".chainette"
    for marker in ("label.done", "again.done"):
        (state / marker).unlink()
    frontier = lines(state / "label.jsonl")
    (state / "label.jsonl").write_text("".join(frontier[:8]) + frontier[8][:20])
    journal = state / "outputs" / "label" / "000.jsonl"
    outputs = lines(journal)
    journal.write_text("".join(outputs[:12]) + outputs[12][:10])
    for leftover in (state / "again.jsonl", state / "outputs" / "again" / "000.jsonl", out / "run.json"):
        leftover.unlink()
    shutil.rmtree(out / "label")
    shutil.rmtree(out / "again")


def test_parquet_run_resumed_after_a_kill_has_every_row_once(engine, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    two_steps().run(rows(20), output_dir=out, output_format="parquet", cache=False)  # the resume is tested, not the cache
    simulate_kill_during_label_with_parquet(out)
    committed = {json.loads(line)["source"] for line in lines(out / ".chainette" / "label.jsonl")[:8]}
    engine.requests.clear()

    result = two_steps().run(rows(20), output_dir=out, output_format="parquet", cache=False)
    assert {r.row_id for r in engine.requests if r.step_id == "label"} == {str(i) for i in range(20)} - committed
    everyone = sorted(str(i) for i in range(20))
    for folder in ("label", "again", "flattened"):
        assert sorted(pq.read_table(out / folder).column("row_id").to_pylist()) == everyone, folder
    assert [r.label for r in result["again"]] == [f"row{i}!" for i in range(20)]
    assert result.stats["resumed"] and result.stats["steps"]["label"]["ok"] == 20


def test_resume_with_another_output_format_is_refused(engine, tmp_path):
    pytest.importorskip("pyarrow")
    one_step().run(rows(2), output_dir=tmp_path / "o")
    with pytest.raises(ChainetteError, match="holds a run written as jsonl, not parquet. Resume it with --format jsonl"):
        one_step().run(rows(2), output_dir=tmp_path / "o", output_format="parquet")
    with pytest.raises(ChainetteError, match="Output format 'csv' is not one of: jsonl, parquet"):
        one_step().run(rows(2), output_dir=tmp_path / "x", output_format="csv")


# The command line and the import


def test_cli_format_parquet_with_columns_end_to_end(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    source = tmp_path / "reviews.csv"
    source.write_text(
        "id,review\n" + "".join(f'{i},"{json.loads(line)["text"]}"\n' for i, line in enumerate((EXAMPLE / "inputs.jsonl").open()))
    )
    out = tmp_path / "out"
    args = ("run", f"{EXAMPLE}/chain.py:chain", "-i", str(source), "-o", str(out), "--columns", "review=text", "--format", "parquet")
    done = chainette(*args)
    assert done.returncode == 0, done.stderr
    flattened = pq.read_table(out / "flattened").to_pylist()
    stats = json.loads((out / "run.json").read_text())
    assert stats["input"]["rows"] == stats["steps"]["sentiment"]["ok"] == 6
    assert len(flattened) == stats["steps"]["summary"]["ok"] > 0
    assert all(row["chain_input.text"] and "summary.headline" in row for row in flattened)
    assert {p.name for p in out.glob("*/*") if p.parent.name != ".chainette"} == {"000.parquet"}, "every output is Parquet"
    done = chainette(*args[:-2])
    assert done.returncode == 1 and "Resume it with --format parquet" in done.stderr


def test_import_chainette_loads_no_table_library():
    assert imported_after("import chainette\nimport chainette.chain").isdisjoint({"pyarrow", "datasets", "pandas"})


# NaN and Infinity: refused as invalid rows in every format, naming the field


class Scored(BaseModel):
    text: str
    score: float


NON_FINITE = "not a finite number: outputs are JSON, which has no NaN or Infinity, so the row is refused rather than written altered"


def write_scores(path: Path) -> Path:
    """Rows a (1.5), b (NaN), c (Infinity), d (-Infinity) in the format of `path`'s extension."""
    scores = [1.5, float("nan"), float("inf"), float("-inf")]
    records = [{"text": text, "score": score} for text, score in zip("abcd", scores, strict=True)]
    if path.suffix == ".parquet":
        return write_parquet(path, records)
    if path.suffix == ".csv":
        path.write_text("text,score\na,1.5\nb,nan\nc,inf\nd,-Infinity\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.mark.parametrize("name", ["in.csv", "in.json", "in.jsonl", "in.parquet"])
def test_nan_and_infinity_are_invalid_rows_in_every_file_format(engine, tmp_path, name):
    path = write_scores(tmp_path / name)
    result = one_step(input_model=Scored).run(path, output_dir=tmp_path / "o")
    assert labels(result) == ["a"] and result.flattened[0]["chain_input.score"] == 1.5
    messages = [error["message"] for error in result.errors]
    assert all(
        f"field 'score' is {value}, {NON_FINITE}" in message for value, message in zip(["nan", "inf", "-inf"], messages, strict=True)
    )
    places = {".csv": [f"{path}:{line}" for line in (3, 4, 5)], ".jsonl": [f"{path}:{line}" for line in (2, 3, 4)]}
    assert [message.split(": field")[0] for message in messages] == places.get(path.suffix, [f"{path}[{index}]" for index in (1, 2, 3)])


def test_nan_and_infinity_are_invalid_rows_from_python_objects_and_datasets(engine, tmp_path, monkeypatch):
    objects = [{"text": "a", "score": 1.5}, {"text": "b", "score": float("nan")}, Scored(text="c", score=float("inf"))]
    result = one_step(input_model=Scored).run(objects, output_dir=tmp_path / "python")
    assert labels(result) == ["a"]
    assert [error["message"].split(",")[0] for error in result.errors] == [
        "inputs[1]: field 'score' is nan",
        "inputs[2]: field 'score' is inf",
    ]
    dataset = FakeStream([{"text": "a", "score": 2.0}, {"text": "b", "score": float("nan")}])
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: dataset))
    result = one_step(input_model=Scored).run("hf:some/set", output_dir=tmp_path / "hf")
    assert labels(result) == ["a"]
    [error] = result.errors
    assert error["message"].startswith(f"hf:some/set[train][1]: field 'score' is nan, {NON_FINITE}")


def test_a_non_finite_number_nested_in_a_picked_column_is_refused_but_one_the_run_does_not_keep_is_not(engine, tmp_path):
    rows = [{"text": "a", "extra": {"p": [1.0, float("nan")]}}, {"text": "b", "unused": float("nan")}]
    result = one_step().run(rows, output_dir=tmp_path / "nested", columns="text,extra")
    assert result.errors[0]["message"].startswith(f"inputs[0]: field 'extra.p[1]' is nan, {NON_FINITE}")
    assert result.errors[1]["message"] == "inputs[1]: no column 'extra' (the row has: text, unused)"
    assert labels(one_step().run(rows, output_dir=tmp_path / "dropped")) == ["a", "b"]


def test_an_integer_beyond_64_bits_is_an_invalid_row_not_a_crash(engine, tmp_path):
    rows = [{"text": "a", "n": 1}, {"text": "b", "n": 123456789012345678901234567890}]
    result = one_step().run(rows, output_dir=tmp_path / "o", columns="text,n")
    assert labels(result) == ["a"]
    [error] = result.errors
    assert error["message"].startswith("inputs[1]: field 'n' is 123456789012345678901234567890, an integer beyond 64 bits")
