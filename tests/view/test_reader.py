"""The viewer's reader: pages of a node's rows (ok, failed, filtered) beside their chain input, over JSONL and Parquet
runs of any size, searched forward from a cursor, and over a run that is still being written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainette.errors import ChainetteError
from chainette.view.reader import SCAN_LIMIT, RunView

from .demo import make_run
from .synthetic import output_line, write_run

ROWS = 100_000


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("big") / "out", ROWS, part_rows=60_000)


@pytest.fixture(scope="module", params=["jsonl", "parquet"])
def demo_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "parquet":
        pytest.importorskip("pyarrow")
    pytest.importorskip("chainette_openai")  # the demo run's step asks the fake server through the OpenAI backend
    return make_run(tmp_path_factory.mktemp("demo") / "out", output_format=request.param)


def ids(page: dict) -> list[str]:
    return [item["row"]["row_id"] for item in page["items"]]


def by_id(page: dict) -> dict[str, dict]:
    """A page's items by row id (a run writes its rows as they are answered, in no fixed order)."""
    return {item["row"]["row_id"]: item for item in page["items"]}


def test_pages_follow_one_another_across_numbered_files(big_run: Path) -> None:
    view = RunView(big_run)
    first = view.page("label", "ok", limit=50)
    second = view.page("label", "ok", cursor=first["next"], limit=50)
    assert ids(first) + ids(second) == [str(index) for index in range(100)]
    crossing = view.page("label", "ok", cursor="0:59990", limit=20)
    assert ids(crossing) == [str(index) for index in range(59_990, 60_010)]
    last = view.page("label", "ok", cursor=crossing["next"].split(":")[0] + ":39995", limit=20)
    assert ids(last) == [str(index) for index in range(99_995, ROWS)]
    assert last["more"] is False


def test_each_row_comes_with_its_chain_input(big_run: Path) -> None:
    page = RunView(big_run).page("label", "ok", cursor="1:30000", limit=3)
    assert [item["input"] for item in page["items"]] == [{"text": f"text {index}"} for index in range(90_000, 90_003)]


def test_a_search_scans_a_bounded_number_of_rows_and_says_where_it_stopped(big_run: Path) -> None:
    view = RunView(big_run)
    page = view.page("label", "ok", query="score=99999")
    assert page["items"] == [] and page["more"] is True and page["scanned"] == SCAN_LIMIT
    pages = 1
    while not page["items"]:
        page = view.page("label", "ok", query="score=99999", cursor=page["next"])
        pages += 1
    assert ids(page) == ["99999"]
    assert pages == -(-ROWS // SCAN_LIMIT)


def test_a_nodes_errors_are_scanned_within_the_same_bound_among_other_nodes_errors(tmp_path: Path) -> None:
    root = write_run(tmp_path / "out", 1, part_rows=10)
    error = {"row_id": "0", "row_index": 0, "step_id": "other", "error_type": "validation", "message": "m", "raw": "{}"}
    lines = [json.dumps({**error, "row_id": str(index)}) for index in range(SCAN_LIMIT + 5)] + [json.dumps({**error, "step_id": "label"})]
    (root / "errors.jsonl").write_text("\n".join(lines) + "\n")
    view = RunView(root)
    first = view.page("label", "failed")
    assert (first["items"], first["scanned"], first["more"]) == ([], SCAN_LIMIT, True)
    second = view.page("label", "failed", cursor=first["next"])
    assert [item["row"]["step_id"] for item in second["items"]] == ["label"] and second["scanned"] == 6


@pytest.mark.parametrize(
    ("query", "expected"),
    [("label=LABEL-3", ["3", "10", "17"]), ("label~bel-6", ["6", "13", "20"]), ("BEL-5", ["5", "12", "19"]), ("nothing=1", [])],
)
def test_search_by_field_value_contained_text_or_plain_text(big_run: Path, query: str, expected: list[str]) -> None:
    page = RunView(big_run).page("label", "ok", query=query, limit=3)
    assert ids(page) == expected


def test_failed_rows_come_with_their_node_kind_message_and_raw_answer(demo_run: Path) -> None:
    view = RunView(demo_run)
    every = view.page(None, "failed")
    assert sorted(ids(every)) == ["1", "5"]
    error = by_id(every)["1"]["row"]
    assert (error["step_id"], error["error_type"]) == ("sentiment", "validation")
    assert "does not match Sentiment" in error["message"]
    assert json.loads(error["raw"]) == {"sentiment": "furious", "confidence": 0.99}
    assert by_id(every)["1"]["input"] == {"text": "Broke after two weeks, I want a refund."}
    assert sorted(ids(view.page("sentiment", "failed"))) == ["1", "5"]
    assert ids(view.page("long_enough", "failed")) == []


def test_filtered_rows_are_the_rows_a_node_received_and_passed_nothing_on_from(demo_run: Path) -> None:
    page = RunView(demo_run).page("long_enough", "filtered")
    assert {row_id: item["row"] for row_id, item in by_id(page).items()} == {
        "2": {"row_id": "2", "row_index": 2, "text": "Ok."},
        "6": {"row_id": "6", "row_index": 6, "text": "Fine."},
    }
    assert by_id(page)["2"]["input"] == {"text": "Ok."}
    assert ids(RunView(demo_run).page("long_enough", "filtered", query="text=fine.")) == ["6"]


def test_the_input_node_shows_the_input_rows(demo_run: Path) -> None:
    page = RunView(demo_run).page("chain_input", "ok", limit=3)
    assert [item["row"] for item in page["items"]] == [
        {"row_id": "0", "row_index": 0, "text": "The kettle boils fast and looks great on the counter."},
        {"row_id": "1", "row_index": 1, "text": "Broke after two weeks, I want a refund."},
        {"row_id": "2", "row_index": 2, "text": "Ok."},
    ]


def test_outputs_show_their_reasoning_apart_and_figures_come_from_run_json(demo_run: Path) -> None:
    view = RunView(demo_run)
    page = view.page("sentiment", "ok")
    assert sorted(ids(page), key=int) == ["0", "3", "4", "7"]
    item = by_id(page)["0"]
    assert item["reasoning"] == {"sentiment_reasoning": "The review's words decide the label."}
    assert "sentiment_reasoning" not in item["row"] and item["row"]["sentiment"] in ("positive", "negative")
    nodes = {node["id"]: node for node in view.summary()["nodes"]}
    assert {key: nodes["sentiment"]["figures"][key] for key in ("rows_in", "ok", "failed")} == {"rows_in": 6, "ok": 4, "failed": 2}
    assert nodes["long_enough"]["figures"]["filtered"] == 2


def test_parquet_outputs_are_read_one_row_group_at_a_time(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root = write_run(tmp_path / "out", 10, part_rows=10)
    (root / "label" / "000.jsonl").unlink()
    rows = [json.loads(output_line(index)) for index in range(5_000)]
    pq.write_table(pa.Table.from_pylist(rows), root / "label" / "000.parquet", row_group_size=1_000)
    view = RunView(root)
    assert ids(view.page("label", "ok", cursor="0:1995", limit=10)) == [str(index) for index in range(1_995, 2_005)]
    assert ids(view.page("label", "ok", query="score~4999")) == ["4999"]


def test_a_run_in_progress_shows_new_complete_lines_as_they_are_written(tmp_path: Path) -> None:
    root = write_run(tmp_path / "out", 3, part_rows=10, finished=False)
    view = RunView(root)
    first = view.page("label", "ok")
    assert ids(first) == ["0", "1", "2"] and first["more"] is False
    signature = view.signature()
    with open(root / "label" / "000.jsonl", "a") as file:
        file.write(output_line(3) + output_line(4)[:10])
    assert view.signature() != signature
    assert ids(view.page("label", "ok", cursor=first["next"])) == ["3"]
    with open(root / "label" / "000.jsonl", "a") as file:
        file.write(output_line(4)[10:])
    assert ids(view.page("label", "ok", cursor=first["next"])) == ["3", "4"]
    assert view.summary()["run"] == {}


def test_a_file_cut_short_is_read_again_from_its_start(tmp_path: Path) -> None:
    root = write_run(tmp_path / "out", 2_500, part_rows=10_000, finished=False)
    view = RunView(root)
    assert ids(view.page("label", "ok", cursor="0:2400", limit=1)) == ["2400"]
    (root / "label" / "000.jsonl").write_text("".join(output_line(index + 10) for index in range(1_500)))
    assert ids(view.page("label", "ok", cursor="0:1200", limit=1)) == ["1210"]
    (root / ".chainette" / "chain_input.jsonl").write_text("")
    assert view.chain_input(3) is None


def test_a_parquet_run_in_progress_is_read_from_its_staged_jsonl_files(tmp_path: Path) -> None:
    root = write_run(tmp_path / "out", 4, part_rows=10, finished=False)
    staged = root / ".chainette" / "outputs" / "label"
    staged.mkdir(parents=True)
    (root / "label" / "000.jsonl").rename(staged / "000.jsonl")
    (root / "label").rmdir()
    assert ids(RunView(root).page("label", "ok")) == ["0", "1", "2", "3"]


def test_the_chain_input_comes_from_flattened_when_the_state_folder_is_gone(demo_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns(".chainette"))
    view = RunView(copy)
    page = view.page("sentiment", "ok")
    expected = {"text": "The kettle boils fast and looks great on the counter."} if (copy / "flattened" / "000.jsonl").exists() else None
    assert by_id(page)["0"]["input"] == expected
    assert view.summary()["filtered_available"] is False
    assert view.page("long_enough", "filtered")["items"] == []


@pytest.mark.parametrize("make", [lambda root: None, lambda root: (root / "graph.json").write_text("{not json")])
def test_a_folder_that_is_not_a_run_is_refused_naming_it(tmp_path: Path, make) -> None:
    make(tmp_path)
    with pytest.raises(ChainetteError, match=rf"{tmp_path} is not a chainette run directory: it has no readable graph.json"):
        RunView(tmp_path)


def test_unknown_nodes_statuses_and_cursors_are_refused(big_run: Path) -> None:
    view = RunView(big_run)
    with pytest.raises(KeyError, match="no node 'nope'"):
        view.page("nope", "ok")
    with pytest.raises(KeyError, match="no status 'done'"):
        view.page("label", "done")
    with pytest.raises(ValueError):
        view.page("label", "ok", cursor="x:y")


def test_a_run_working_in_the_directory_shows_as_running_with_its_session_figures(tmp_path: Path) -> None:
    from chainette.runlock import RunLock

    root = write_run(tmp_path / "out", 3, part_rows=10, finished=False)
    session = {"session": 1, "status": "running", "nodes": {"label": {"rows": 3, "input_tokens": 30, "output_tokens": 9, "cached": 1}}}
    (root / ".chainette" / "sessions.json").write_text(json.dumps([session]))
    view = RunView(root)
    assert view.summary()["running"] is False
    with RunLock(root / ".chainette", "chainette run"):
        summary = view.summary()
    assert summary["running"] is True
    assert next(node["live"] for node in summary["nodes"] if node["id"] == "label") == session["nodes"]["label"]


def test_a_steps_rows_say_whether_they_were_asked_or_answered_from_the_response_cache(tmp_path: Path) -> None:
    pytest.importorskip("chainette_openai")
    first = make_run(tmp_path / "first")
    again = make_run(tmp_path / "again")  # the same rows: every answer comes from the response cache
    for root, cached in ((first, False), (again, True)):
        items = RunView(root).page("sentiment", "ok")["items"]
        assert items and {item["cached"] for item in items} == {cached}
    assert "cached" not in RunView(first).page("long_enough", "ok")["items"][0], "an apply asks nothing"
