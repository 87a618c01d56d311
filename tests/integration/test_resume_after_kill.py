"""`kill -9` and Ctrl-C in the middle of `chainette run`, then the same command again: every row ends
exactly once, and only the rows in flight at the kill are requested twice."""

from __future__ import annotations

from collections import Counter
import signal

import pytest

from chainette.testing import FakeServer

from .conftest import Project, echo, request_key, wait_for

ROWS = 200
CONCURRENCY = 8


def assert_complete(project: Project) -> None:
    for step in ("first", "second"):
        lines = project.outputs(step)
        assert sorted(int(line["row_id"]) for line in lines) == list(range(ROWS)), f"{step}: every row exactly once"
        assert all(line["label"] == f"row{line['row_id']}" for line in lines), f"{step}: answers aligned"
    assert (project.out / "errors.jsonl").read_text() == ""


@pytest.mark.parametrize("kill_after", [60, 200, 330], ids=["early-in-step-1", "end-of-step-1", "in-step-2"])
def test_kill_9_then_resume(tmp_path, kill_after):
    with FakeServer(latency=0.01, respond=echo) as server:
        project = Project(tmp_path, server.base_url, ROWS, concurrency=CONCURRENCY)
        process = project.start()
        wait_for(lambda: len(server.chat_requests()) >= kill_after)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = Counter(request_key(body) for body in server.chat_requests())
        seen = len(server.chat_requests())

        done = project.run()
        assert done.returncode == 0, done.stderr
        again = Counter(request_key(body) for body in server.chat_requests()[seen:])
    twice = set(before) & set(again)
    assert len(twice) <= CONCURRENCY, f"{len(twice)} rows requested twice; at most the {CONCURRENCY} in flight may be"
    assert len(before) + len(again) - len(twice) == 2 * ROWS
    assert_complete(project)


def test_ctrl_c_finishes_rows_in_flight_and_says_how_to_resume(tmp_path):
    with FakeServer(latency=0.02, respond=echo) as server:
        project = Project(tmp_path, server.base_url, ROWS, concurrency=CONCURRENCY)
        process = project.start()
        wait_for(lambda: len(server.chat_requests()) >= 50)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130
        assert "Interrupted (Ctrl-C)" in stderr and "Run the same command again" in stderr
        assert "Traceback" not in stderr
        before = Counter(request_key(body) for body in server.chat_requests())
        seen = len(server.chat_requests())
        assert not server.in_flight

        done = project.run()
        assert done.returncode == 0, done.stderr
        again = Counter(request_key(body) for body in server.chat_requests()[seen:])
    assert not set(before) & set(again), "a graceful stop commits every answered row"
    assert_complete(project)


def test_sigterm_behaves_like_ctrl_c(tmp_path):
    with FakeServer(latency=0.02, respond=echo) as server:
        project = Project(tmp_path, server.base_url, ROWS, concurrency=CONCURRENCY)
        process = project.start()
        wait_for(lambda: len(server.chat_requests()) >= 50)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 143
        assert "Stopped by SIGTERM" in stderr and "Run the same command again" in stderr
        assert project.run().returncode == 0
    assert_complete(project)


def test_a_different_input_in_the_same_directory_is_refused(tmp_path):
    with FakeServer(respond=echo) as server:
        project = Project(tmp_path, server.base_url, 5)
        assert project.run().returncode == 0
        project.inputs.write_text('{"text": "other"}\n')
        done = project.run()
    assert done.returncode == 1
    assert "holds a run of other inputs" in done.stderr and "--overwrite" in done.stderr
