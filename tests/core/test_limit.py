"""`--limit N` (`Chain.run(limit=N)`): only the first N input rows go through the chain; the same run without the
limit (or with a larger one) goes on with the rest, every row decided exactly once."""

from __future__ import annotations

from collections import Counter
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from chainette import Branch, Chain, apply, register_engine
from chainette.errors import ChainetteError, ConfigError
from chainette.hub.layout import read_run

from .conftest import Label
from .test_run import echo, label_step


def drop_every_fourth(item: Label) -> Label | list[Label]:
    return [] if int(item.label.removeprefix("row")) % 4 == 3 else item


def joined_chain() -> Chain:
    fr = Branch(name="fr", steps=[label_step("to_fr", prompt="<<fr {{label.label}}>>", input_model=None)]).join("fr")
    de = Branch(name="de", steps=[label_step("to_de", prompt="<<de {{label.label}}>>", input_model=None)]).join("de")
    final = label_step("final", prompt="<<{{fr.label}} + {{de.label}}>>", input_model=None)
    return Chain(name="c", steps=[label_step(), apply(drop_every_fourth, id="keep"), [fr, de], final])


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": f"row{i}"}) + "\n" for i in range(20)))
    return path


def test_a_limited_run_goes_on_with_the_rest(scripted, tmp_path, inputs):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"

    first = joined_chain().run(inputs, output_dir=out, limit=5)
    assert first.stats["status"] == "limited" and first.stats["limit"] == 5
    assert first.stats["input"]["rows"] == 5
    steps = first.stats["steps"]
    assert steps["label"]["ok"] == 5
    assert (steps["keep"]["ok"], steps["keep"]["filtered"]) == (4, 1)
    assert steps["to_fr"]["ok"] == steps["to_de"]["ok"] == steps["final"]["ok"] == 4
    assert [r.label for r in first["final"]] == [f"fr row{i} + de row{i}" for i in (0, 1, 2, 4)]
    assert len(first.flattened) == 4
    assert not list((out / ".chainette").glob("*.done")), "no node is finished while input rows are left"
    with pytest.raises(ChainetteError, match=r"did not complete \(status limited\)"):
        read_run(out)  # what `chainette push` reads

    further = joined_chain().run(inputs, output_dir=out, limit=12)
    assert further.stats["status"] == "limited" and further.stats["input"]["rows"] == 12
    assert further.stats["steps"]["final"]["ok"] == 9

    rest = joined_chain().run(inputs, output_dir=out)
    assert rest.stats["status"] == "completed" and rest.stats["limit"] is None
    kept = [i for i in range(20) if i % 4 != 3]
    assert [r.label for r in rest["final"]] == [f"fr row{i} + de row{i}" for i in kept]
    assert [r["row_id"] for r in rest.records("label")] == [str(i) for i in range(20)]
    assert [row["row_id"] for row in rest.flattened] == [str(i) for i in kept]
    requests = Counter((r.step_id, r.row_id) for r in backend.requests)
    assert set(requests.values()) == {1}, "no row requested twice"
    assert Counter(step for step, _ in requests) == {"label": 20, "to_fr": 15, "to_de": 15, "final": 15}
    assert sorted(p.stem for p in (out / ".chainette").glob("*.done")) == [
        "chain_input",
        "final",
        "group0.joined",
        "keep",
        "label",
        "to_de",
        "to_fr",
    ]
    assert [s["status"] for s in rest.stats["sessions"]] == ["limited", "limited", "completed"]


def test_a_limit_above_the_input_size_completes_the_run(scripted, tmp_path, inputs):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    result = Chain(name="c", steps=[label_step()]).run(inputs, output_dir=tmp_path / "out", limit=20)
    assert result.stats["status"] == "completed" and result.stats["limit"] == 20
    assert (tmp_path / "out" / ".chainette" / "label.done").exists()


@pytest.mark.parametrize("limit", [0, -3, 2.5])
def test_a_limit_that_is_not_a_positive_count_is_refused(tmp_path, limit):
    register_engine("s", backend="fake", model="m")
    with pytest.raises(ConfigError, match="The limit must be a positive number of input rows"):
        Chain(name="c", steps=[label_step()]).run([{"text": "a"}], output_dir=tmp_path / "out", limit=limit)
    assert not (tmp_path / "out").exists()


CHAIN = """from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="fake", model="m")
chain = Chain(name="c", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="{{text}}")])
"""


def test_limit_on_the_command_line(tmp_path, inputs):
    (tmp_path / "chain.py").write_text(CHAIN)
    out = tmp_path / "out"
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "chainette", "run", f"{tmp_path}/chain.py:chain", "-i", str(inputs), "-o", str(out), *extra]
        return subprocess.run(command, capture_output=True, text=True, env=env)

    limited = run("--limit", "5")
    assert limited.returncode == 0, limited.stderr
    assert "c: limited" in limited.stdout
    assert "Limited to the first 5 input rows (--limit 5): run the same command without --limit" in limited.stdout
    assert len((out / "label" / "000.jsonl").read_text().splitlines()) == 5
    assert json.loads((out / "run.json").read_text())["limit"] == 5

    done = run()
    assert done.returncode == 0, done.stderr
    assert "c: completed" in done.stdout and "Limited" not in done.stdout
    lines = [json.loads(line) for line in (out / "label" / "000.jsonl").read_text().splitlines()]
    assert [line["row_id"] for line in lines] == [str(i) for i in range(20)]

    refused = run("--limit", "0", "--overwrite")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "The limit must be a positive number of input rows (got 0)" in refused.stderr


def test_a_limit_after_an_unfinished_full_run_keeps_to_the_first_rows(scripted, tmp_path, inputs):
    """An earlier session read every input row, then stopped in the middle of 'final': a limited run answers only
    the limited rows, finishes nothing, and the run without a limit answers the rest."""
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    joined_chain().run(inputs, output_dir=out, cache=False)
    state = out / ".chainette"
    (state / "final.done").unlink()
    (state / "final.jsonl").write_text("".join((state / "final.jsonl").read_text().splitlines(keepends=True)[:2]))
    backend.requests.clear()

    limited = joined_chain().run(inputs, output_dir=out, limit=10, cache=False)
    assert limited.stats["status"] == "limited"
    assert sorted(int(r.row_id) for r in backend.requests) == [2, 4, 5, 6, 8, 9], "rows 0 and 1 were committed"
    assert not (state / "final.done").exists()

    backend.requests.clear()
    rest = joined_chain().run(inputs, output_dir=out, cache=False)
    assert rest.stats["status"] == "completed"
    assert sorted(int(r.row_id) for r in backend.requests) == [i for i in range(10, 20) if i % 4 != 3]
    assert [int(r["row_id"]) for r in rest.records("final")] == [i for i in range(20) if i % 4 != 3]
