"""The flattened table and the context rows carry: a node's frontier keeps only what later prompts read,
and the flattened table still shows every top-level entry, past fan-outs and joins."""

from __future__ import annotations

import json

from chainette import Branch, Chain, apply, register_engine

from .conftest import Label, Text
from .test_run import echo, label_step, rows


def split(item: Label) -> list[Text]:
    """Fan each row out into two children, or filter it out when its label ends in 3."""
    return [] if item.label.endswith("3") else [Text(text=f"{item.label}.a"), Text(text=f"{item.label}.b")]


def test_flattened_takes_entries_from_ancestors_and_joins(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m", max_concurrency=4)
    fan = apply(split, id="fan", output_model=Text)
    left = Branch(name="left", steps=[label_step(id="l", prompt="<<{{text}}>>", input_model=None)]).join("lj")
    right = Branch(name="right", steps=[label_step(id="r", prompt="<<{{text}}>>", input_model=None)]).join("rj")
    last = label_step(id="last", prompt="<<{{lj.label}}+{{rj.label}}>>", input_model=None)
    result = Chain(name="c", steps=[label_step(id="first"), fan, [left, right], last]).run(rows(5), output_dir=tmp_path / "out")

    flat = result.flattened
    assert [line["row_id"] for line in flat] == ["0-0", "0-1", "1-0", "1-1", "2-0", "2-1", "4-0", "4-1"]
    for line in flat:
        parent = line["row_id"].split("-")[0]
        child = f"row{parent}.{'ab'[int(line['row_id'][-1])]}"
        assert line["chain_input.text"] == f"row{parent}" and line["first.label"] == f"row{parent}"
        assert line["fan.text"] == child and line["lj.label"] == child and line["rj.label"] == child
        assert line["last.label"] == f"{child}+{child}"
    assert "l.label" not in flat[0], "a branch's own steps are shown through their join alias, as before"
    columns = [name.split(".")[0] for name in flat[0] if name not in ("row_id", "row_index")]
    assert list(dict.fromkeys(columns)) == ["chain_input", "first", "fan", "lj", "rj", "last"], "columns in chain order"


def test_a_frontier_keeps_only_what_later_prompts_read(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    steps = [label_step(id="s0"), label_step(id="s1", prompt="<<{{label}}>>", input_model=None)]
    steps.append(label_step(id="s2", prompt="<<{{label}} {{chain_input.text}}>>", input_model=None))
    Chain(name="c", steps=steps).run(rows(3), output_dir=tmp_path / "out")
    state = tmp_path / "out" / ".chainette"

    def entries(node):
        return [sorted(json.loads(line)["rows"][0]["ctx"]) for line in (state / f"{node}.jsonl").read_text().splitlines()]

    assert entries("s0") == [["chain_input", "s0"]] * 3, "the input is read by s2 later"
    assert entries("s1") == [["chain_input", "s1"]] * 3
    assert entries("s2") == [["chain_input", "s1", "s2"]] * 3, "the last node keeps what it receives, for the flattened table"
