"""Honest figures: tokens of failed requests count, run.json adds up every session of a resumed run, input fields
named like the executor's own words change nothing, and every figure counts what it names: a branch's requests in
flight, input rows failed, rows out of a fan-out, the requests a second Ctrl-C drops."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal

import pytest
from rich.console import Console

from chainette import Branch, Chain, RetryableError, RowError, SamplingParams, Step, apply, register_engine
from chainette.client import Usage
from chainette.errors import RunInterrupted
from chainette.events import NodeCounted, NodeStarted, Progress, RunStarted
from chainette.outcome import exit_status
import chainette.policy
from chainette.ui.plain import PlainLines
from chainette.ui.summary import summary

from .conftest import Label, Text
from .test_resume import simulate_kill_during_label, two_steps
from .test_run import echo, label_step, rows


def test_tokens_of_failed_retried_and_repaired_requests_are_counted(scripted, tmp_path, monkeypatch):
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.001)

    def answer(request, attempt):
        if request.row_id == "0":
            return RowError("cut off", kind="truncated", usage=Usage(100, 50))
        if request.row_id == "1" and attempt == 1:
            return RetryableError("busy", kind="http_503", usage=Usage(7, 0))
        if request.row_id == "2" and attempt == 1:
            return "not json"
        return json.dumps({"label": request.row_id, "score": 0.5})

    scripted(answer)
    register_engine("s", backend="scripted", model="m")
    step = Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o").stats["steps"]["label"]
    assert (step["ok"], step["failed"]) == (2, 1)
    assert (step["requests"], step["retries"], step["repairs"]) == (5, 1, 1)
    answered = 3  # row 1 after its retry, row 2's invalid answer and its repair: Usage(3, 2) each
    assert step["input_tokens"] == 100 + 7 + answered * 3
    assert step["output_tokens"] == 50 + answered * 2


def test_a_resumed_run_reports_totals_over_every_session(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    out = tmp_path / "out"
    two_steps().run(rows(20), output_dir=out)
    simulate_kill_during_label(out)
    backend.requests.clear()

    stats = two_steps().run(rows(20), output_dir=out).stats
    label = stats["steps"]["label"]
    assert label["ok"] == 20
    assert label["requests"] == 20 + len([r for r in backend.requests if r.step_id == "label"]), "both sessions' requests"
    assert label["input_tokens"] == 3 * label["requests"]
    sessions = stats["sessions"]
    assert [s["session"] for s in sessions] == [1, 2] and sessions[1]["status"] == "completed"
    assert sessions[1]["nodes"]["label"]["rows"] == 12, "the second session decided only the rows not committed"
    assert stats["seconds"] == round(sum(s["seconds"] for s in sessions), 3)
    assert json.loads((out / ".chainette" / "sessions.json").read_text()) == sessions


def test_input_fields_named_like_frontier_keys_change_nothing(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")

    class Odd(Text):
        skip: int
        ctx: str
        direct: str
        src: str
        origin: str

    data = [{"text": f"row{i}", "skip": 1, "ctx": "x", "direct": "y", "src": "z", "origin": "o"} for i in range(5)]
    events = []
    first = label_step(input_model=Odd)
    second = Step(id="again", output_model=Label, engine_name="s", user_prompt="<<{{label.label}}!>>")
    result = Chain(name="c", steps=[first, second]).run(data, output_dir=tmp_path / "o", reporter=events.append)
    totals = {e.node: e.total for e in events if isinstance(e, NodeCounted)}
    assert totals["label"] == totals["again"] == 5
    assert [r.label for r in result["again"]] == [f"row{i}!" for i in range(5)]
    assert result.flattened[0]["chain_input.skip"] == 1


def test_progress_counts_rows_answered_not_sent(scripted, tmp_path):

    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    seen = []

    def reporter(event):
        if type(event).__name__ == "Progress" and "label" in event.nodes:
            seen.append(event.nodes["label"])

    Chain(name="c", steps=[label_step()]).run(rows(30), output_dir=tmp_path / "o", reporter=reporter)
    assert all(s["rows_in"] == s["ok"] + s["failed"] + s["filtered"] for s in seen)


def test_each_branch_counts_only_its_own_requests_in_flight(scripted, tmp_path):
    """Two branches share an engine of 4 slots: each branch's in-flight figure is its share, never the engine's 4."""
    held = {"a": 0, "b": 0}
    release = asyncio.Event()
    seen = []

    async def answer(request, attempt):
        held[request.step_id] += 1
        await release.wait()
        return echo(request, attempt)

    class Watcher:
        interval = 0.01

        def __call__(self, event):
            if isinstance(event, Progress) and sum(held.values()) == 4 and not release.is_set():
                seen.append(({node: event.nodes[node]["in_flight"] for node in held}, dict(held)))
                release.set()

    scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=4)
    branches = [Branch(name=name, steps=[label_step(name, input_model=None)]) for name in held]
    Chain(name="c", steps=[branches]).run(rows(12), output_dir=tmp_path / "o", reporter=Watcher())
    in_flight, sent = seen[0]
    assert in_flight == sent, "each branch shows the requests it sent and has no answer to"
    assert sum(in_flight.values()) == 4, "together, what the engine holds"


def fan_out(item):
    """Three children per row, none for row 0 (filtered out)."""
    return [] if item["text"] == "row0" else [{"text": f"{item['text']}.{k}"} for k in range(3)]


def test_rows_failed_counts_input_rows_once_however_many_lines_they_fail(scripted, tmp_path):
    """Rows 1 and 2 fan out into 3 children each, and each child fails: 6 error lines, 2 input rows failed."""
    scripted(
        lambda request, attempt: (
            RowError("no", kind="refusal")
            if "row1." in str(request.messages) or "row2." in str(request.messages)
            else echo(request, attempt)
        )
    )
    register_engine("s", backend="scripted", model="m")
    chain = Chain(name="c", steps=[apply(fan_out, id="split"), label_step(input_model=None)])
    out = tmp_path / "o"
    stats = chain.run(rows(5), output_dir=out).stats
    assert (out / "errors.jsonl").read_text().count("\n") == 6
    assert stats["steps"]["label"]["failed"] == 6, "a node's failed figure counts its own rows"
    assert stats["rows_failed"] == 2
    assert exit_status(stats) == (
        3,
        "2 input rows failed (6 error lines: a row can fail in several branches, samples or fan-out children): "
        "run the same command with --retry-errors to run them again (see errors.jsonl).",
    )
    assert chain.run(rows(5), output_dir=out).stats["rows_failed"] == 2, "read back from errors.jsonl on a resume"


def test_an_older_run_json_without_the_newer_figures_gets_an_exit_status():
    """run.json written by an earlier version (no rows_failed, no kind or rows_in per node) reads as 0 for what it lacks."""
    old = {"chain": "c", "status": "completed", "seconds": 1.0, "input": {"rows": 2, "invalid": 0}, "steps": {"a": {"ok": 0, "failed": 2}}}
    assert exit_status(old) == (1, "node 'a' passed on none of its 2 rows (2 failed): see errors.jsonl.")
    assert exit_status({**old, "steps": {"a": {"ok": 2, "failed": 0}}}) == (0, None)


def test_rows_failed_counts_a_row_failing_in_two_branches_once(scripted, tmp_path):
    scripted(lambda request, attempt: RowError("no", kind="refusal") if request.row_id == "3" else echo(request, attempt))
    register_engine("s", backend="scripted", model="m")
    branches = [Branch(name=name, steps=[label_step(name, input_model=None)]) for name in ("a", "b")]
    stats = Chain(name="c", steps=[branches]).run(rows(5), output_dir=tmp_path / "o").stats
    assert (stats["steps"]["a"]["failed"], stats["steps"]["b"]["failed"], stats["rows_failed"]) == (1, 1, 1)


def test_rows_out_show_a_fan_out_and_samples_in_run_json_and_the_summary(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    chain = Chain(name="c", steps=[apply(fan_out, id="split"), label_step(input_model=None, sampling=SamplingParams(n=2))])
    out = tmp_path / "o"
    result = chain.run(rows(4), output_dir=out)
    expected = {"split": (4, 3, 1, 9), "label": (9, 9, 0, 18)}
    figures = {node: (n["rows_in"], n["ok"], n["filtered"], n["rows_out"]) for node, n in result.stats["steps"].items()}
    assert figures == expected
    assert json.loads((out / "run.json").read_text())["steps"]["split"]["rows_out"] == 9
    again = chain.run(rows(4), output_dir=out).stats["steps"]
    assert {node: (n["rows_in"], n["ok"], n["filtered"], n["rows_out"]) for node, n in again.items()} == expected, "kept by a resume"
    console = Console(width=150, record=True, color_system=None)
    console.print(summary(result.stats, str(out)))
    table = console.export_text().splitlines()
    assert "out" in table[2].split()
    cells = next(line for line in table if "split" in line).replace("│", " ").split()
    assert cells[1:6] == ["4", "3", "0", "1", "9"]


def test_a_second_ctrl_c_says_how_many_requests_in_flight_it_dropped(scripted, tmp_path):
    interrupted: list[bool] = []

    async def answer(request, attempt):
        if int(request.row_id) < 4 or interrupted:
            return echo(request, attempt)
        if request.row_id == "8":
            os.kill(os.getpid(), signal.SIGINT)  # the graceful stop: it waits for the requests in flight...
            await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)  # ...which never come back: the second Ctrl-C drops them
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=5)
    chain = Chain(name="c", steps=[label_step()])
    with pytest.raises(RunInterrupted) as excinfo:
        chain.run(rows(20), output_dir=tmp_path / "o", cache=False)
    message = str(excinfo.value)
    assert "5 requests in flight dropped by a second Ctrl-C (their rows are not decided: the next run asks them again)" in message
    assert "finished" not in message.replace("every finished row", "")
    assert len(backend.requests) == 9 and json.loads((tmp_path / "o" / "run.json").read_text())["steps"]["label"]["ok"] == 4

    interrupted.append(True)
    result = chain.run(rows(20), output_dir=tmp_path / "o", cache=False)
    assert result.stats["steps"]["label"]["ok"] == 20
    assert sorted(int(r.row_id) for r in backend.requests[9:]) == list(range(4, 20)), "the dropped rows are asked again"


def test_a_graceful_stop_says_the_requests_in_flight_were_finished(scripted, tmp_path):
    def answer(request, attempt):
        if request.row_id == "3":
            os.kill(os.getpid(), signal.SIGTERM)
        return echo(request, attempt)

    scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=2)
    with pytest.raises(RunInterrupted, match="Stopped by SIGTERM: requests in flight were finished, engines stopped"):
        Chain(name="c", steps=[label_step()]).run(rows(20), output_dir=tmp_path / "o", cache=False)


def test_a_graceful_stop_sends_no_request_that_was_waiting_for_a_slot(scripted, tmp_path):
    """Two branches share an engine of 2 slots: when the stop comes, 2 requests are in flight and 2 rows wait for a
    slot; the 2 in flight finish, the 2 waiting are not sent, and the next run asks them."""
    release = asyncio.Event()
    stopped: list[bool] = []

    async def answer(request, attempt):
        if len(backend.requests) == 2 and not stopped:
            stopped.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)  # the stop is taken before the requests in flight return
            release.set()
        await release.wait()
        return echo(request, attempt)

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=2)
    branches = [Branch(name=name, steps=[label_step(name, input_model=None)]) for name in ("a", "b")]
    chain = Chain(name="c", steps=[branches])
    with pytest.raises(RunInterrupted, match="requests in flight were finished"):
        chain.run(rows(6), output_dir=tmp_path / "o", cache=False)
    assert len(backend.requests) == 2, "no request sent after the stop"
    steps = json.loads((tmp_path / "o" / "run.json").read_text())["steps"]
    assert steps["a"]["ok"] + steps["b"]["ok"] == 2
    assert steps["a"]["requests"] + steps["b"]["requests"] == 2, "a request not sent is not counted"

    result = chain.run(rows(6), output_dir=tmp_path / "o", cache=False)
    assert len(result["a"]) == len(result["b"]) == 6 and len(backend.requests) == 12, "each row asked once"


def test_plain_lines_never_print_an_unknown_total(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    out = io.StringIO()
    chain = Chain(name="c", steps=[label_step()])
    chain.run(rows(3), output_dir=tmp_path / "o", reporter=PlainLines(out, every=0))
    chain.run(rows(3), output_dir=tmp_path / "o", reporter=PlainLines(out, every=0))
    text = out.getvalue()
    assert "?" not in text
    lines = [line[11:] for line in text.splitlines()]
    assert "chain_input started" in lines, "a streamed input's length is not known when it starts"
    assert "chain_input started (3 rows, 3 done before)" in lines and "label started (3 rows, 3 done before)" in lines

    streaming = PlainLines(out := io.StringIO(), every=0)
    streaming(RunStarted(chain="c", output_dir="o", resumed=False, nodes=[{"id": "chain_input", "kind": "input", "label": "input"}]))
    streaming(NodeStarted(node="chain_input", kind="input", total=None))
    streaming(Progress(nodes={"chain_input": {"kind": "input", "rows_in": 120, "ok": 120, "in_flight": 0, "session": {"rows": 120}}}))
    assert out.getvalue().splitlines()[-1][11:].startswith("chain_input 120 rows so far, ")
