"""The response cache shared by processes: two runs at once, and kill -9 at random instants while answers are
being stored (the file stays sound, everything in it is a valid answer, and the next run uses it).
CHAINETTE_SOAK=N runs N times as many kills."""

from __future__ import annotations

import json
import os
from pathlib import Path
import random
import signal
import sqlite3
import time

import pytest

from chainette.cache.database import FLUSH_SECONDS
from chainette.testing import FakeServer

from .conftest import Project, echo, wait_for

SOAK = int(os.environ.get("CHAINETTE_SOAK", "1"))
LOSABLE_SECONDS = 2 * FLUSH_SECONDS + 1.0
"""How long before a kill an answer may have been answered and still be lost: the batch gathering and the one being
written (each at most FLUSH_SECONDS of answers), and a second for the event loop's delays on a loaded machine."""


def stored_answers(cache_dir: Path) -> list[dict]:
    """Every answer in the cache file, after checking the file's integrity."""
    with sqlite3.connect(cache_dir / "responses.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [json.loads(json.loads(blob)[0]) for (blob,) in db.execute("SELECT answer FROM answers")]


def test_two_runs_at_once_share_the_cache(tmp_path, cache_dir):
    with FakeServer(respond=echo, latency=0.002) as server:
        for name in ("one", "two", "three"):
            (tmp_path / name).mkdir()
        one, two = (Project(tmp_path / name, server.base_url, rows=300, concurrency=16) for name in ("one", "two"))
        running = [one.start(), two.start()]
        for process in running:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
        answers = stored_answers(cache_dir)
        assert len(answers) == 600 and all(set(answer) == {"label"} for answer in answers)
        server.requests.clear()
        three = Project(tmp_path / "three", server.base_url, rows=300)
        assert three.run().returncode == 0
        assert server.chat_requests() == []
        assert [row["label"] for row in three.outputs("second")] == [f"row{i}" for i in range(300)]


@pytest.mark.parametrize("seed", range(3 * SOAK))
def test_kill_9_while_answers_are_stored_leaves_a_sound_cache(tmp_path, cache_dir, seed):
    rng = random.Random(seed)
    with FakeServer(respond=echo, latency=0.001) as server:
        (tmp_path / "p").mkdir()
        project = Project(tmp_path / "p", server.base_url, rows=3000, concurrency=32)
        losable = 0
        for _ in range(2):
            asked = len(server.chat_requests())
            process = project.start()
            wait_for(lambda asked=asked: len(server.chat_requests()) > asked)  # answering (a loaded machine starts slowly)
            losable += asked_shortly_before_kill(server, process, asked, rng.uniform(0.0, 2.2))
            answers = stored_answers(cache_dir)
            assert all(answer["label"].startswith("row") for answer in answers)
        assert project.run().returncode == 0
        outputs = project.outputs("second")
        assert sorted(row["row_index"] for row in outputs) == list(range(3000)), "every row once"
        assert all(row["label"] == f"row{row['row_id']}" for row in outputs), "each row its own answer"
        server.requests.clear()
        (tmp_path / "q").mkdir()
        again = Project(tmp_path / "q", server.base_url, rows=3000, concurrency=32)
        assert again.run().returncode == 0
        assert all(row["label"] == f"row{row['row_id']}" for row in again.outputs("second"))
        # A kill loses only the answers not yet committed to the file: those of the batch being written and of the one
        # gathering, answered within the last two flush periods before it. Only those are asked again.
        assert len(server.chat_requests()) <= losable


def asked_shortly_before_kill(server: FakeServer, process, asked: int, delay: float) -> int:
    """Kill -9 `process` after `delay` seconds; how many requests the server got in the `LOSABLE_SECONDS` before the kill
    (`asked`: how many it had before the process started)."""
    history = [(time.monotonic(), len(server.chat_requests()))]
    while time.monotonic() < history[0][0] + delay:
        time.sleep(0.01)
        history.append((time.monotonic(), len(server.chat_requests())))
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed, total = time.monotonic(), len(server.chat_requests())
    before = max((count for at, count in history if at <= killed - LOSABLE_SECONDS), default=asked)
    return total - before
