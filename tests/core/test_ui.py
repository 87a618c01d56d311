"""What a run shows: JSON event lines, plain lines, the live view (snapshot at a fixed width), cost."""

from __future__ import annotations

import io
import json
import re

from rich.console import Console

from chainette import Chain, RowError, register_engine
from chainette.cli import main
from chainette.events import EngineChanged, NodeCounted, NodeFinished, NodeStarted, Progress, RunStarted
from chainette.ui.live import render_state
from chainette.ui.plain import PlainLines
from chainette.ui.state import RunState

from .test_cli import EXAMPLE
from .test_run import echo, label_step, rows


def test_json_logs_are_one_event_per_line(capsys, tmp_path):
    assert main(["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "--json-logs"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = [event["event"] for event in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    started = [e["node"] for e in events if e["event"] == "node_started"]
    assert started == ["chain_input", "sentiment", "confident", "to_fr", "to_de", "summary"]
    assert {e["state"] for e in events if e["event"] == "engine_changed"} == {"starting", "ready", "stopped"}
    finished = {e["node"]: e["stats"] for e in events if e["event"] == "node_finished"}
    assert finished["sentiment"]["ok"] == 6
    assert events[-1]["status"] == "completed" and events[-1]["summary"]["steps"]["summary"]["rows_in"] == finished["summary"]["rows_in"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", e["at"]) for e in events)


def test_plain_lines_tell_starts_finishes_errors_and_engines(scripted, tmp_path):
    scripted(lambda request, attempt: RowError("nope", kind="refusal") if request.row_id == "1" else echo(request, attempt))
    register_engine("s", backend="scripted", model="m")
    out = io.StringIO()
    Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o", reporter=PlainLines(out, every=0))
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", line) for line in lines)
    text = "\n".join(line[11:] for line in lines)
    assert "run c -> " in text
    assert "label started" in text and "label receives 3 rows" in text
    assert "label row 1 failed: refusal: nope" in text
    assert "label finished: 2 ok, 1 failed, 0 filtered" in text
    assert "engine s starting (scripted: m)" in text and "engine s stopped" in text


def test_live_view_snapshot():
    state = RunState()
    nodes = [
        {"id": "chain_input", "kind": "input", "label": "input"},
        {"id": "sentiment", "kind": "step", "label": "├─ sentiment"},
        {"id": "parallel:fr", "kind": "parallel", "label": "├─ parallel"},
        {"id": "to_fr", "kind": "step", "label": "│  └─ to_fr"},
        {"id": "summary", "kind": "step", "label": "└─ summary"},
    ]
    state(RunStarted(chain="reviews", output_dir="runs/r", resumed=False, nodes=nodes))
    state(NodeStarted(node="chain_input", kind="input", total=None))
    state(NodeFinished(node="chain_input", stats={"kind": "input", "rows_in": 400, "ok": 400, "failed": 0}))
    state(NodeStarted(node="sentiment", kind="step", total=400))
    stats = {
        "kind": "step",
        "rows_in": 100,
        "ok": 97,
        "failed": 3,
        "filtered": 0,
        "input_tokens": 5000,
        "output_tokens": 700,
        "cost_usd": 0.0012,
        "cached": 40,
        "in_flight": 16,
        "session": {"rows": 100},
    }
    state(Progress(nodes={"sentiment": stats}))
    state(EngineChanged(engine="llm", state="ready", detail="http://127.0.0.1:8000/v1", at="2026-01-01T10:00:00.000+00:00"))
    state.nodes["sentiment"].started = 100.0
    console = Console(width=120, record=True, color_system=None, legacy_windows=False)
    console.print(render_state(state, now=110.0))
    assert [line.rstrip() for line in console.export_text().splitlines()] == [
        "chainette reviews → runs/r",
        "input        ━━━━━━━━━━━━━━━━━━━━━━━━                 400/400           0 errors              done",
        "├─ sentiment ━━━━━━                   100/400 (+16 in flight) 10 rows/s 3 errors 40 cached ETA 30s 5000/700 tok $0.0012",
        "├─ parallel",
        "│  └─ to_fr  waiting",
        "└─ summary   waiting",
        "╭─ log " + "─" * 112 + "╮",
        "│ 10:00:00 engine llm ready (http://127.0.0.1:8000/v1)" + " " * 65 + "│",
        "╰" + "─" * 118 + "╯",
    ]


def test_live_view_shows_two_steps_progressing_at_once_each_with_its_rate_and_eta():
    state = RunState()
    nodes = [
        {"id": "chain_input", "kind": "input", "label": "input"},
        {"id": "extract", "kind": "step", "label": "├─ extract"},
        {"id": "judge", "kind": "step", "label": "└─ judge"},
    ]
    state(RunStarted(chain="c", output_dir="o", resumed=False, nodes=nodes))
    for node, kind in (("chain_input", "input"), ("extract", "step"), ("judge", "step")):
        state(NodeStarted(node=node, kind=kind, total=None))
    state(NodeCounted(node="chain_input", total=1000))
    state(NodeFinished(node="chain_input", stats={"kind": "input", "rows_in": 1000, "ok": 1000, "failed": 0}))
    state(NodeCounted(node="extract", total=1000))
    extract = {"kind": "step", "rows_in": 400, "ok": 400, "failed": 0, "in_flight": 16, "session": {"rows": 400}}
    judge = {"kind": "step", "rows_in": 100, "ok": 100, "failed": 0, "in_flight": 8, "window": 8, "session": {"rows": 100}}
    state(Progress(nodes={"extract": extract, "judge": judge}))
    state.nodes["extract"].started = state.nodes["judge"].started = 100.0
    console = Console(width=120, record=True, color_system=None, legacy_windows=False)
    console.print(render_state(state, now=110.0))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert "400/1000 (+16 in flight) 40 rows/s" in lines[2] and "ETA 15s" in lines[2]
    assert "100/~1000 (+8 in flight, window 8) 10 rows/s" in lines[3] and "ETA 1m30s" in lines[3], "the input's count until its own"
    state(NodeCounted(node="judge", total=950))
    assert state.nodes["judge"].eta(110.0) == 85.0


def test_live_view_says_resuming_and_shows_filtered_and_stopped_nodes():
    state = RunState()
    nodes = [{"id": "keep", "kind": "apply", "label": "keep"}, {"id": "label", "kind": "step", "label": "label"}]
    state(RunStarted(chain="c", output_dir="o", resumed=True, nodes=nodes))
    state(NodeStarted(node="keep", kind="apply", total=10))
    state(NodeFinished(node="keep", stats={"kind": "apply", "rows_in": 10, "ok": 6, "failed": 0, "filtered": 4}))
    state(NodeStarted(node="label", kind="step", total=6))
    state(NodeFinished(node="label", stats={"kind": "step", "rows_in": 2, "ok": 2, "failed": 0}, complete=False))
    console = Console(width=110, record=True, color_system=None, legacy_windows=False)
    console.print(render_state(state, now=0.0))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[0] == "chainette c → o (resuming)"
    assert lines[1].startswith("keep") and "4 filtered" in lines[1] and lines[1].endswith("done")
    assert lines[2].startswith("label") and "stopped" in lines[2] and "done" not in lines[2], "an interrupted step is not done"


def test_rates_count_this_sessions_rows_and_answered_rows_only():
    state = RunState()
    nodes = [{"id": "label", "kind": "step", "label": "label"}, {"id": "dead", "kind": "step", "label": "dead"}]
    state(RunStarted(chain="c", output_dir="o", resumed=True, nodes=nodes))
    state(NodeStarted(node="label", kind="step", total=500, done=300))
    state(NodeStarted(node="dead", kind="step", total=50))
    label = {"kind": "step", "rows_in": 350, "ok": 350, "in_flight": 8, "session": {"rows": 50}}
    dead = {"kind": "step", "rows_in": 0, "in_flight": 50, "session": {"rows": 0}}
    state(Progress(nodes={"label": label, "dead": dead}))
    state.nodes["label"].started = state.nodes["dead"].started = 100.0
    assert state.nodes["label"].rate(110.0) == 5.0, "rows done before the resume do not count toward this session's rate"
    assert state.nodes["label"].eta(110.0) == 30.0
    assert state.nodes["dead"].done == 0 and state.nodes["dead"].in_flight == 50, "rows sent but not answered are in flight"
    assert state.nodes["dead"].eta(119.0) is None


def test_cost_from_engine_prices(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m", price_per_million_input=2.0, price_per_million_output=10.0)
    result = Chain(name="c", steps=[label_step()]).run(rows(4), output_dir=tmp_path / "o")
    step = result.stats["steps"]["label"]
    assert (step["input_tokens"], step["output_tokens"]) == (12, 8)
    assert step["cost_usd"] == (12 * 2.0 + 8 * 10.0) / 1_000_000
    assert result.stats["cost_usd"] == step["cost_usd"]


def test_unknown_price_means_tokens_only(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    result = Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "o")
    assert result.stats["steps"]["label"]["cost_usd"] is None and result.stats["cost_usd"] is None
    assert result.stats["steps"]["label"]["input_tokens"] == 3


def test_quiet_prints_only_the_summary_even_in_a_terminal(capsys, tmp_path, monkeypatch):
    import chainette.chain

    monkeypatch.setattr(chainette.chain, "_interactive", lambda: True)
    assert main(["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reviews: completed" in out
    assert "engines" not in out and "rows/s" not in out, "no live view, no progress lines"


def test_an_engine_whose_server_keeps_running_is_released_not_stopped(scripted, tmp_path):
    backend = scripted(echo)
    backend.stop_note = "its server, started by someone else, keeps running"
    register_engine("s", backend="scripted", model="m")
    events = []
    Chain(name="c", steps=[label_step()]).run(rows(2), output_dir=tmp_path / "o", reporter=events.append)
    last = [event for event in events if isinstance(event, EngineChanged)][-1]
    assert (last.state, last.detail) == ("released", "its server, started by someone else, keeps running")


def test_live_view_in_a_terminal_does_not_echo_keys_and_restores_the_terminal(scripted, tmp_path, monkeypatch):
    """An echoed ^C shifts the live view, which then redraws its header a line lower: keys are not echoed while it is up."""
    import os
    import pty
    import termios

    from chainette.ui.live import LiveView

    leader, follower = pty.openpty()
    with os.fdopen(follower, "r") as terminal_in:
        monkeypatch.setattr("sys.stdin", terminal_in)
        echoed = termios.ECHO | termios.ECHOCTL
        before = termios.tcgetattr(follower)[3]
        assert before & echoed
        seen = []

        def on_progress(event):
            seen.append(termios.tcgetattr(follower)[3] & echoed)

        scripted(echo)
        register_engine("s", backend="scripted", model="m")
        view = LiveView(Console(file=io.StringIO(), force_terminal=True))
        Chain(name="t", steps=[label_step()]).run(
            rows(3), output_dir=tmp_path / "o", reporter=lambda event: (view(event), on_progress(event))
        )
        assert seen[0] == 0 and seen[-1] == before & echoed
        assert termios.tcgetattr(follower)[3] == before
    os.close(leader)


def test_a_step_waiting_for_batches_shows_their_state_and_counts_and_logs_each_change_once():
    from chainette.events import BatchChanged

    state = RunState()
    state(RunStarted(chain="b", output_dir="runs/b", resumed=False, nodes=[{"id": "label", "kind": "step", "label": "label"}]))
    state(NodeStarted(node="label", kind="step", total=10))
    for completed in (0, 3, 6):
        state(BatchChanged(node="label", batch="batch_1", state="in_progress", completed=completed, total=10))
    state(BatchChanged(node="label", batch="batch_2", state="validating", total=5))
    assert state.nodes["label"].waiting_batches == "2 batches in_progress, validating, 6/15 answered"
    assert [line[9:] for line in state.log] == [
        "label batch batch_1 in_progress: 0/10 answered",
        "label batch batch_2 validating: 0/5 answered",
    ]
    console = Console(width=160, record=True, color_system=None)
    console.print(render_state(state, now=0.0))
    assert "2 batches in_progress, validating, 6/15 answered" in console.export_text()
    state(BatchChanged(node="label", batch="batch_1", state="completed", completed=10, total=10))
    state(BatchChanged(node="label", batch="batch_2", state="completed", completed=5, total=5))
    assert state.nodes["label"].waiting_batches is None
