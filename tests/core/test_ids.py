"""Row identity: rows numbered by position, or the user's own ids (`id_column`), checked unique; `row_index` (the
input position) beside `row_id` everywhere, so results sort and join back to the source."""

from __future__ import annotations

import json
from pathlib import Path
import random

import pytest

from chainette import Branch, Chain, apply, register_engine
from chainette.errors import ChainetteError, InputError

from .conftest import Label, Text
from .test_cli import chainette
from .test_run import echo, label_step


def split(item: Label) -> list[Text]:
    """Two children per row, each carrying its parent's label."""
    return [Text(text=f"{item.label}.a"), Text(text=f"{item.label}.b")]


def fan_out_chain() -> Chain:
    fan = apply(split, id="fan", output_model=Text)
    return Chain(name="ids", steps=[label_step(id="first"), fan, label_step(id="last", input_model=None)])


def test_own_ids_with_dashes_stay_aligned_past_a_fan_out(scripted, tmp_path):
    """Ids like 'a' and 'a-1' used to be confused: the flattened table read a child's ancestors by cutting its id at '-'."""
    scripted(echo)
    register_engine("s", backend="scripted", model="m", max_concurrency=4)
    ids = ["doc", "doc-a", "x-1", "x-2", "7", "123e4567-e89b-12d3-a456-426614174000"]
    random.Random(5).shuffle(ids)
    inputs = [{"doc": doc, "text": f"text of {doc}"} for doc in ids]
    result = fan_out_chain().run(inputs, output_dir=tmp_path / "out", id_column="doc")

    flat = result.flattened
    assert [line["row_id"] for line in flat] == [f"{doc}-{child}" for doc in ids for child in (0, 1)]
    for line in flat:
        doc = line["row_id"].rsplit("-", 1)[0]
        assert line["row_index"] == ids.index(doc)
        assert line["chain_input.text"] == f"text of {doc}" and line["first.label"] == f"text of {doc}"
        assert line["last.label"] == line["fan.text"] == f"text of {doc}.{'ab'[int(line['row_id'][-1])]}"
    assert [r["row_id"] for r in result.records("first")] == ids, "the user's ids, in input order"


@pytest.mark.parametrize(("first", "second"), [("a", "a-0"), ("a-0", "a"), ("a-1-0", "a"), ("a", "a-1-0"), ("3", "3-12")])
def test_ids_that_a_fan_out_could_confuse_are_refused(scripted, tmp_path, first, second):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    inputs = [{"doc": first, "text": "one"}, {"doc": "unrelated-7", "text": "two"}, {"doc": second, "text": "three"}]
    with pytest.raises(InputError, match=rf"inputs\[2\]: the ids '{second}' and '{first}' .*inputs\[0\].* differ only by a '-<number>'"):
        Chain(name="c", steps=[label_step()]).run(inputs, output_dir=tmp_path / "out", id_column="doc")


def test_row_index_sorts_naturally_where_row_id_does_not(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m", max_concurrency=8)
    Chain(name="c", steps=[label_step()]).run([{"text": f"row{i}"} for i in range(12)], output_dir=tmp_path / "out")
    lines = [json.loads(line) for line in (tmp_path / "out" / "label" / "000.jsonl").read_text().splitlines()]
    by_index = sorted(lines, key=lambda line: line["row_index"])
    assert [line["label"] for line in by_index] == [f"row{i}" for i in range(12)]
    assert sorted(line["row_id"] for line in lines)[:3] == ["0", "1", "10"], "why a numeric index is needed"


def test_a_repeated_id_stops_the_run_before_any_request(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    path = tmp_path / "in.jsonl"
    path.write_text('{"doc": "x", "text": "one"}\n{"doc": 2, "text": "two"}\n{"doc": "x", "text": "three"}\n')
    with pytest.raises(InputError, match=r"in.jsonl:3: the id 'x' \(column 'doc'\) was already used at .*in.jsonl:1"):
        Chain(name="c", steps=[label_step()]).run(path, output_dir=tmp_path / "out", id_column="doc")
    assert backend.requests == []


def test_a_row_without_a_usable_id_is_an_input_error_named_by_its_place(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    path = tmp_path / "in.jsonl"
    path.write_text('{"doc": "x", "text": "one"}\n{"text": "no id"}\n{"doc": "", "text": "empty"}\n')
    result = Chain(name="c", steps=[label_step()]).run(path, output_dir=tmp_path / "out", id_column="doc")
    assert [r["row_id"] for r in result.records("label")] == ["x"]
    errors = {e["row_index"]: e for e in result.errors}
    assert set(errors) == {1, 2}
    assert errors[1]["row_id"].endswith("in.jsonl:2") and "id column 'doc'" in errors[1]["message"]
    assert "no such column" in errors[1]["message"] and "got ''" in errors[2]["message"]


def test_a_resume_with_another_id_column_is_refused(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    inputs = [{"doc": f"d{i}", "key": f"k{i}", "text": f"row{i}"} for i in range(3)]
    chain = Chain(name="c", steps=[label_step()])
    chain.run(inputs, output_dir=tmp_path / "out", id_column="doc")
    assert [r["row_id"] for r in chain.run(inputs, output_dir=tmp_path / "out", id_column="doc").records("label")] == ["d0", "d1", "d2"]
    with pytest.raises(ChainetteError, match="holds a run of other inputs"):
        chain.run(inputs, output_dir=tmp_path / "out", id_column="key")


def test_cli_id_column(tmp_path):
    chain = tmp_path / "chain.py"
    chain.write_text(
        "from pydantic import BaseModel\n"
        "from chainette import Chain, Step, register_engine\n"
        "class Review(BaseModel):\n    text: str\n"
        "class Label(BaseModel):\n    label: str\n"
        "register_engine('llm', backend='fake', model='m')\n"
        "chain = Chain(name='c', steps=[Step(id='label', input_model=Review, output_model=Label, engine_name='llm', user_prompt='{{text}}')])\n"
    )
    inputs = tmp_path / "in.csv"
    inputs.write_text("id,review\nr-1,good\nr-2,bad\n")
    done = chainette("run", str(chain), "-i", str(inputs), "-o", str(tmp_path / "o"), "--columns", "review=text", "--id-column", "id")
    assert done.returncode == 0, done.stdout + done.stderr
    flat = [json.loads(line) for line in (tmp_path / "o" / "flattened" / "000.jsonl").read_text().splitlines()]
    assert sorted((line["row_id"], line["row_index"]) for line in flat) == [("r-1", 0), ("r-2", 1)]
    done = chainette("run", str(chain), "-i", str(inputs), "-o", str(tmp_path / "p"), "--columns", "review=text,id")
    assert done.returncode == 0, done.stdout + done.stderr
    flat = [json.loads(line) for line in (tmp_path / "p" / "flattened" / "000.jsonl").read_text().splitlines()]
    assert sorted((line["chain_input.text"], line["chain_input.id"]) for line in flat) == [("bad", "r-2"), ("good", "r-1")], (
        "a picked column the input model has no field for still reaches flattened/"
    )


def every_kind_of_row_chain() -> Chain:
    """A step, an apply that fans out, a joined parallel group and a last step."""
    fr = Branch(name="fr", steps=[label_step("to_fr", prompt="<<fr {{text}}>>", input_model=None)]).join("fr")
    de = Branch(name="de", steps=[label_step("to_de", prompt="<<de {{chain_input.text}}>>", input_model=None)]).join("de")
    fan = apply(split, id="fan", output_model=Text)
    return Chain(name="kinds", steps=[label_step(id="first"), fan, [fr, de], label_step(id="last", input_model=None)])


def answer_or_fail(request, attempt):
    """The echo answer, except for the row 'broken', whose answers never parse."""
    return "not json" if "<<broken>>" in str(request.messages) else echo(request, attempt)


KINDS_INPUT = [{"text": "a"}, {"text": "b"}, {"nope": 1}, {"text": "broken"}]


def test_row_id_is_a_json_string_in_every_file(scripted, tmp_path):
    scripted(answer_or_fail)
    register_engine("s", backend="scripted", model="m")
    every_kind_of_row_chain().run(KINDS_INPUT, output_dir=tmp_path / "out")
    files = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").glob("**/*.jsonl"))
    files = [name for name in files if not name.startswith(".chainette/")]
    assert files == ["errors.jsonl", *(f"{node}/000.jsonl" for node in ("fan", "first", "flattened", "last", "to_de", "to_fr"))]
    for name in files:
        lines = [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]
        assert lines and all(type(line["row_id"]) is str and type(line["row_index"]) is int for line in lines), name
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert sorted((error["row_id"], error["step_id"]) for error in errors) == [("2", "chain_input"), ("3", "first")]


def test_row_id_is_a_string_column_in_parquet_outputs(scripted, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    scripted(answer_or_fail)
    register_engine("s", backend="scripted", model="m")
    every_kind_of_row_chain().run(KINDS_INPUT, output_dir=tmp_path / "out", output_format="parquet")
    files = sorted((tmp_path / "out").glob("*/000.parquet"))
    assert len(files) == 6
    assert {str(pq.read_schema(path).field("row_id").type) for path in files} == {"string"}


def test_outputs_and_errors_merge_on_row_id_in_pandas_as_the_docs_read_them(scripted, tmp_path):
    pd = pytest.importorskip("pandas")
    scripted(answer_or_fail)
    register_engine("s", backend="scripted", model="m")
    every_kind_of_row_chain().run(KINDS_INPUT, output_dir=tmp_path / "out")

    def read(name: str):
        return pd.read_json(tmp_path / "out" / name, lines=True, dtype={"row_id": str})

    first, last, flat, errors = read("first/000.jsonl"), read("last/000.jsonl"), read("flattened/000.jsonl"), read("errors.jsonl")
    every_row = first.merge(errors, on="row_id", how="outer", suffixes=("", "_error"))
    assert sorted(every_row["row_id"]) == ["0", "1", "2", "3"]
    assert sorted(last.merge(flat, on="row_id")["row_id"]) == ["0-0", "0-1", "1-0", "1-1"]
    assert first.merge(last.assign(parent=last["row_id"].str.split("-").str[0]), left_on="row_id", right_on="parent").shape[0] == 4


def test_the_docs_give_one_sort_and_read_row_id_as_text():
    root = Path(__file__).resolve().parents[2]
    pages = {page.relative_to(root).as_posix(): page.read_text() for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]}
    assert [name for name, text in pages.items() if "sort by `row_id`" in text] == []
    reads = [(name, line) for name, text in pages.items() for line in text.splitlines() if "pd.read_json(" in line]
    assert reads and [read for read in reads if "dtype=" not in read[1]] == []
