"""Resuming: what a killed run left on disk is repaired, committed rows are not requested again,
and every row ends exactly once in the outputs or the errors file; --retry-errors redoes failed rows."""

from __future__ import annotations

import json
from pathlib import Path

from chainette import Chain, RowError, Step, register_engine
from chainette import inputs as inputs_module
from chainette.frontier import Commit

from .conftest import Label, Text
from .test_run import echo, rows


def two_steps() -> Chain:
    first = Step(id="label", input_model=Text, output_model=Label, engine_name="s", user_prompt="<<{{text}}>>")
    second = Step(id="again", output_model=Label, engine_name="s", user_prompt="<<{{label.label}}!>>")
    return Chain(name="c", steps=[first, second])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def simulate_kill_during_label(out: Path) -> None:
    """What `kill -9` in the middle of step 'label' leaves: some rows committed, some outputs not, half lines."""
    state = out / ".chainette"
    for marker in ("label.done", "again.done"):
        (state / marker).unlink()
    frontier = lines(state / "label.jsonl")
    (state / "label.jsonl").write_text("".join(frontier[:8]) + frontier[8][:20])
    outputs = lines(out / "label" / "000.jsonl")
    (out / "label" / "000.jsonl").write_text("".join(outputs[:12]) + outputs[12][:10])
    for leftover in (state / "again.jsonl", out / "again" / "000.jsonl", out / "run.json"):
        leftover.unlink()


def test_resume_after_a_kill_redoes_only_uncommitted_rows(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    two_steps().run(rows(20), output_dir=out, cache=False)  # the resume is tested: the cache would answer the redone rows
    simulate_kill_during_label(out)
    committed = {json.loads(line)["source"] for line in lines(out / ".chainette" / "label.jsonl")[:8]}
    backend.requests.clear()

    result = two_steps().run(rows(20), output_dir=out, cache=False)
    label_requests = {r.row_id for r in backend.requests if r.step_id == "label"}
    assert label_requests == {str(i) for i in range(20)} - committed
    assert sum(r.step_id == "again" for r in backend.requests) == 20
    assert [r["row_id"] for r in result.records("label")] == [str(i) for i in range(20)]
    assert [r.label for r in result["again"]] == [f"row{i}!" for i in range(20)]
    assert len(result.flattened) == 20
    assert result.stats["steps"]["label"]["ok"] == 20


def test_errors_are_committed_and_not_retried_on_resume(scripted, tmp_path):
    backend = scripted(lambda request, attempt: RowError("no", kind="refusal") if request.row_id == "3" else echo(request, attempt))
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    two_steps().run(rows(5), output_dir=out)
    (out / ".chainette" / "again.done").unlink()
    backend.requests.clear()
    result = two_steps().run(rows(5), output_dir=out)
    assert [r.row_id for r in backend.requests] == [], "label is done; again has committed every row it received"
    assert [e["row_id"] for e in result.errors] == ["3"]


def test_retry_errors_runs_failed_rows_again(scripted, tmp_path):
    failing = {"3", "7"}
    backend = scripted(lambda request, attempt: RowError("busy", kind="http_400") if request.row_id in failing else echo(request, attempt))
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows(10)) + "{broken\n")
    first = two_steps().run(path, output_dir=out)
    assert sorted(e["row_id"] for e in first.errors) == ["10", "3", "7"]

    failing.clear()
    backend.requests.clear()
    result = two_steps().run(path, output_dir=out, retry_errors=True)
    assert sorted((r.step_id, r.row_id) for r in backend.requests) == [("again", "3"), ("again", "7"), ("label", "3"), ("label", "7")]
    assert [r["row_id"] for r in result.records("again")] == [str(i) for i in range(10)]
    assert [(e["row_id"], e["step_id"]) for e in result.errors] == [("10", "chain_input")], "bad input cannot succeed; it stays"
    assert len(result.flattened) == 10


def test_a_row_that_fails_again_on_retry_is_in_the_errors_file_once(scripted, tmp_path):
    backend = scripted(
        lambda request, attempt: RowError("still busy", kind="http_400") if request.row_id == "2" else echo(request, attempt)
    )
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    two_steps().run(rows(4), output_dir=out)
    backend.requests.clear()
    result = two_steps().run(rows(4), output_dir=out, retry_errors=True)
    assert [(r.step_id, r.row_id) for r in backend.requests] == [("label", "2")]
    assert [(e["row_id"], e["step_id"], e["message"]) for e in result.errors] == [("2", "label", "still busy")]


def test_interrupted_ingest_and_partial_errors_file_are_repaired(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "row0"}\n{"nope": 1}\n{"text": "row2"}\n')
    two_steps().run(path, output_dir=out)
    state = out / ".chainette"
    for marker in state.glob("*.done"):
        marker.unlink()
    errors = (out / "errors.jsonl").read_text()
    (out / "errors.jsonl").write_text(errors + errors[:15])
    result = two_steps().run(path, output_dir=out)
    assert [e["row_id"] for e in result.errors] == ["1"]
    assert [r["row_id"] for r in result.records("again")] == ["0", "2"]
    assert result.stats["input"] == {"rows": 3, "invalid": 1}


def test_a_run_another_state_layout_wrote_is_refused_with_what_to_do(scripted, tmp_path):
    import pytest

    from chainette.errors import ChainetteError

    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    chain = Chain(name="c", steps=[Step(id="label", output_model=Label, engine_name="s", input_model=Text, user_prompt="<<{{text}}>>")])
    out = tmp_path / "o"
    chain.run(rows(3), output_dir=out)
    manifest = out / ".chainette" / "manifest.json"
    written = json.loads(manifest.read_text())
    del written["layout"]  # as chainette wrote it before rows streamed
    manifest.write_text(json.dumps(written))
    with pytest.raises(ChainetteError, match=r"another version of chainette wrote \(state layout 1, this one reads 2\).*--overwrite"):
        chain.run(rows(3), output_dir=out)
    assert len(chain.run(rows(3), output_dir=out, overwrite=True)["label"]) == 3


def test_a_resume_decodes_only_what_is_left(scripted, tmp_path, monkeypatch):
    """The input rows decided already are not decoded again, nor are the commits of one row a node decided already
    (only their heads are read): the work of a resume follows the rows it has left, not the whole run."""
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    chain = two_steps()
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows(100)))
    chain.run(inputs, output_dir=tmp_path / "o", limit=90)
    decoded = {"inputs": 0, "commits": 0}

    def counted(kind, decode):
        def decode_counted(*args):
            decoded[kind] += 1
            return decode(*args)

        return decode_counted

    monkeypatch.setattr(inputs_module, "decode", counted("inputs", inputs_module.decode))
    monkeypatch.setattr(Commit, "decode", counted("commits", Commit.decode))
    result = chain.run(inputs, output_dir=tmp_path / "o")
    assert result.stats["steps"]["again"]["ok"] == 100
    assert decoded["inputs"] == 10, "only the input rows left are decoded"
    assert decoded["commits"] <= 2 * 10, "each reader decodes at most the commits of the rows left"
