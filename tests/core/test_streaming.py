"""Rows stream between nodes: a node works while the ones before it do, runs at most a window of rows ahead of the
node after it, and a parallel group joins each row as soon as its branches have decided it."""

from __future__ import annotations

import asyncio
import random

import pytest

from chainette import Branch, Chain, apply, register_engine
from chainette.events import NodeCounted
from chainette.execution import feed, group

from .test_run import echo, label_step, rows

WINDOW = 8


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(feed, "WINDOW", WINDOW)
    monkeypatch.setattr(group, "WINDOW", WINDOW)


def asked(backend, step_id):
    return [request.row_id for request in backend.requests if request.step_id == step_id]


def test_the_next_step_is_asked_before_the_step_before_has_answered_every_row(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("a", backend="scripted", model="m", max_concurrency=4)
    register_engine("b", backend="scripted", model="m", max_concurrency=4)
    chain = Chain(name="c", steps=[label_step(engine="a"), label_step("again", "<<{{label.label}}>>", engine="b", input_model=None)])
    result = chain.run(rows(300), output_dir=tmp_path / "o", cache=False)
    order = [request.step_id for request in backend.requests]
    assert order.index("again") < len(order) - 1 - order[::-1].index("label"), "'again' waited for every row of 'label'"
    assert [r.label for r in result["again"]] == [f"row{i}" for i in range(300)]


def test_a_step_runs_at_most_a_window_of_rows_ahead_of_a_slower_one_after_it(scripted, tmp_path, small_window):
    ahead = []

    async def answer(request, attempt):
        if request.step_id == "again":
            await asyncio.sleep(0.002)
        else:
            ahead.append(len(asked(backend, "label")) - len(asked(backend, "again")))
        return echo(request, attempt)

    backend = scripted(answer)
    register_engine("a", backend="scripted", model="m", max_concurrency=4)
    register_engine("b", backend="scripted", model="m", max_concurrency=1)
    chain = Chain(name="c", steps=[label_step(engine="a"), label_step("again", "<<{{label.label}}>>", engine="b", input_model=None)])
    result = chain.run(rows(120), output_dir=tmp_path / "o", cache=False)
    assert len(result["again"]) == 120
    assert max(ahead) <= WINDOW + 4 + 1, "rows between two nodes are bounded: the window, plus the requests in flight"
    assert max(ahead) >= WINDOW, "the faster step did run ahead"


def test_a_group_joins_each_row_once_its_branches_decided_it_and_lets_in_at_most_a_window(scripted, tmp_path, small_window):
    ahead = []

    async def answer(request, attempt):
        if request.step_id == "slow":
            await asyncio.sleep(0.002)
        elif request.step_id == "fast":
            ahead.append(len(asked(backend, "fast")) - len(asked(backend, "slow")))
        return echo(request, attempt)

    backend = scripted(answer)
    register_engine("a", backend="scripted", model="m", max_concurrency=4)
    register_engine("b", backend="scripted", model="m", max_concurrency=1)
    branches = [
        Branch(name="f", steps=[label_step("fast", engine="a")]).join("f"),
        Branch(name="s", steps=[label_step("slow", engine="b")]).join("s"),
    ]
    after = label_step("after", "<<{{f.label}}+{{s.label}}>>", engine="a", input_model=None)
    events = []
    result = Chain(name="c", steps=[branches, after]).run(rows(100), output_dir=tmp_path / "o", cache=False, reporter=events.append)
    assert [r.label for r in result["after"]] == [f"row{i}+row{i}" for i in range(100)]
    assert {e.node: e.total for e in events if isinstance(e, NodeCounted)} == {"chain_input": 100, "fast": 100, "slow": 100, "after": 100}
    order = [request.step_id for request in backend.requests]
    assert order.index("after") < len(order) - 1 - order[::-1].index("slow"), "the join waited for every row"
    assert max(ahead) <= WINDOW + 4 + 1, "a group lets in a window of rows: the fast branch waits for the slow one"


def test_a_same_error_stop_in_a_later_step_stops_the_run_while_the_first_is_active_and_a_resume_completes(scripted, tmp_path):
    from chainette import EngineError, RowError

    broken = [True]

    async def answer(request, attempt):
        if request.step_id == "label":
            await asyncio.sleep(0.001)
        elif broken[0]:
            return RowError("HTTP 400: response_format is not supported", kind="http_400")
        return echo(request, attempt)

    backend = scripted(answer)
    register_engine("a", backend="scripted", model="m", max_concurrency=2)
    register_engine("b", backend="scripted", model="m", max_concurrency=2)
    chain = Chain(name="c", steps=[label_step(engine="a"), label_step("again", "<<{{label.label}}>>", engine="b", input_model=None)])
    with pytest.raises(EngineError, match="again"):
        chain.run(rows(200), output_dir=tmp_path / "o", cache=False)
    assert 0 < len(asked(backend, "label")) < 200, "the first step was still working when the second stopped the run"
    broken[0] = False
    result = chain.run(rows(200), output_dir=tmp_path / "o", cache=False)
    failed = {e["row_id"] for e in result.errors}
    assert failed and all(e["step_id"] == "again" for e in result.errors), "the rows failed before the stop stay failed"
    assert [r["row_id"] for r in result.records("again")] == [str(i) for i in range(200) if str(i) not in failed]
    assert len(result.records("label")) == 200 and len(set(asked(backend, "label"))) == 200, "no row of 'label' asked twice"


def test_retry_errors_asks_a_branchs_failed_rows_again_and_joins_them(scripted, tmp_path):
    from chainette import RowError

    failing = {"3", "7"}

    def answer(request, attempt):
        if request.step_id == "right" and request.row_id in failing:
            return RowError("not now", kind="refusal")
        return echo(request, attempt)

    scripted(answer)
    register_engine("s", backend="scripted", model="m")
    branches = [
        Branch(name="l", steps=[label_step("left")]).join("l"),
        Branch(name="r", steps=[label_step("right")]).join("r"),
    ]
    chain = Chain(name="c", steps=[branches, label_step("after", "<<{{l.label}}+{{r.label}}>>", input_model=None)])
    first = chain.run(rows(10), output_dir=tmp_path / "o")
    assert sorted(r["row_id"] for r in first.records("after")) == [str(i) for i in range(10) if str(i) not in failing]
    failing.clear()
    again = chain.run(rows(10), output_dir=tmp_path / "o", retry_errors=True)
    assert sorted((r["row_id"] for r in again.records("after")), key=int) == [str(i) for i in range(10)]
    assert {r["row_id"]: r["label"] for r in again.records("after")}["3"] == "row3+row3"
    assert again.errors == []


def test_a_chain_of_no_nodes_still_reads_its_input(tmp_path):
    result = Chain(name="c", steps=[]).run(rows(3), output_dir=tmp_path / "o")
    assert result.stats["input"]["rows"] == 3 and len(result.flattened) == 3


def test_retry_errors_asks_again_a_row_that_failed_in_a_branch_the_group_does_not_join(scripted, tmp_path):
    from chainette import RowError

    failing = {"3"}

    def answer(request, attempt):
        if request.step_id == "side" and request.row_id in failing:
            return RowError("not now", kind="refusal")
        return echo(request, attempt)

    scripted(answer)
    register_engine("s", backend="scripted", model="m")
    branches = [Branch(name="l", steps=[label_step("left")]).join("l"), Branch(name="x", steps=[label_step("side")])]
    chain = Chain(name="c", steps=[branches, label_step("after", "<<{{l.label}}>>", input_model=None)])
    first = chain.run(rows(6), output_dir=tmp_path / "o")
    assert len(first.records("after")) == 6 and [e["row_id"] for e in first.errors] == ["3"]
    failing.clear()
    again = chain.run(rows(6), output_dir=tmp_path / "o", retry_errors=True)
    assert again.errors == [] and sorted((r["row_id"] for r in again.records("side")), key=int) == [str(i) for i in range(6)]
    assert len(again.records("after")) == 6


async def test_a_reader_at_the_tail_takes_rows_from_memory_and_one_further_behind_from_the_file(tmp_path):
    """The latest commits stay in memory (feed.RECENT to twice that) for the readers at the tail: they get the very rows
    committed; a reader further behind decodes equal rows from the file, and each skips the rows its node decided."""
    from chainette.execution.stopping import StopSignal
    from chainette.frontier import Commit, Row
    from chainette.run.appends import LineFile, Writer

    writer, control, path = Writer(), StopSignal(), tmp_path / "frontier.jsonl"
    file = LineFile(writer, path)
    source = feed.Feed(path, file, control)
    writer.flushed.append(source.release)
    early = feed.Reader(source, control)
    made = [Row(str(i), {"a": {"x": i}}, "a", index=i) for i in range(3 * feed.RECENT)]

    def commit(rows: list[Row]) -> None:
        for row in rows:
            source.passed([row], file.commit(Commit(row.row_id, [row])))
        writer.flush()

    async def take(reader: feed.Reader, count: int) -> list[Row]:
        return [await reader.next() for _ in range(count)]

    commit(made[:10])
    assert all(got is row for got, row in zip(await take(early, 10), made[:10], strict=True)), "from memory"
    commit(made[10:])
    source.close()
    late = feed.Reader(source, control, decided={"3"})
    from_file = await take(late, 3 * feed.RECENT - 1)
    assert [row.row_id for row in from_file] == [row.row_id for row in made if row.row_id != "3"]
    assert from_file[0] is not made[0] and from_file[0] == made[0], "the older commits were dropped from memory: decoded"
    assert from_file[-1] is made[-1], "once it reaches the kept ones, from memory"
    assert await late.next() is None
    assert (await take(early, len(made) - 10))[-1] is made[-1] and await early.next() is None


@pytest.mark.parametrize("seed", range(16))
def test_a_step_failing_anywhere_leaves_no_node_after_it_finished_and_a_resume_decides_every_row(scripted, tmp_path, seed):
    """A chain of every node kind (a step, an apply, a group of two joined branches, a step joining them; the apply
    passing rows on as they are, or filtering some out and fanning the others out in two), one of its steps stopped by
    an EngineError after a random number of rows, and a few random rows refused by some step before: no node after the
    failed step may take the end of its rows for the end of its input (it would be marked done, and the resume would
    skip them). The resume decides every row once (the refused ones stay failed, each once), and --retry-errors then
    answers those too."""
    from chainette import EngineError, RowError
    from chainette.errors import error_for_status

    draw = random.Random(seed)
    steps = ["label", "left", "right", "after"]
    failing, size, fanned = draw.choice(steps), draw.randrange(25, 60), seed % 2 == 1
    refused = {(draw.choice(steps), str(row)) for row in range(size) if draw.random() < 0.1}
    fail_after = draw.randrange(0, min(25, size - len(refused)))  # fewer than the rows that reach the failing step
    answered: list[int | None] = [0]

    def answer(request, attempt):
        if answered[0] is not None and (request.step_id, request.row_id.split("-")[0]) in refused:
            return RowError("refused", kind="refusal")
        if request.step_id == failing and answered[0] is not None:
            answered[0] += 1
            if answered[0] > fail_after:
                return error_for_status(501, "Not Implemented", engine="s")
        return echo(request, attempt)

    def spread(row):
        return [] if row.label.endswith("3") else [row, row]

    scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=draw.choice([1, 3]))
    branches = [
        Branch(name="l", steps=[label_step("left", "<<{{label.label}}>>", input_model=None)]).join("l"),
        Branch(name="r", steps=[label_step("right", "<<{{label.label}}>>", input_model=None)]).join("r"),
    ]
    after = label_step("after", "<<{{l.label}}+{{r.label}}>>", input_model=None)
    middle = apply(spread, id="spread") if fanned else apply(lambda row: row, id="same")
    chain = Chain(name="c", steps=[label_step(), middle, branches, after])
    with pytest.raises(EngineError, match="HTTP 501"):
        chain.run(rows(size), output_dir=tmp_path / "o", cache=False)
    answered[0] = None
    result = chain.run(rows(size), output_dir=tmp_path / "o", cache=False)
    failed = [error["row_id"] for error in result.errors]
    assert len(failed) == len(set(failed)) and {row.split("-")[0] for row in failed} <= {row for _, row in refused}, "each failed once"
    kept = [i for i in range(size) if not (fanned and str(i).endswith("3"))]
    expected = {f"{i}-{k}" if fanned else str(i): f"row{i}+row{i}" for i in kept for k in range(2 if fanned else 1)}
    labels = {r["row_id"]: r["label"] for r in result.records("after")}
    answered_rows = {row: label for row, label in expected.items() if row not in failed and row.split("-")[0] not in failed}
    assert labels == answered_rows, f"rows lost after a failure in '{failing}'"
    result = chain.run(rows(size), output_dir=tmp_path / "o", cache=False, retry_errors=True)
    assert {r["row_id"]: r["label"] for r in result.records("after")} == expected and result.errors == []
