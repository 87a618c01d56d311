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

from chainette.testing import FakeServer

from .conftest import Project, echo, wait_for

SOAK = int(os.environ.get("CHAINETTE_SOAK", "1"))


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
        for _ in range(2):
            asked = len(server.chat_requests())
            process = project.start()
            wait_for(lambda asked=asked: len(server.chat_requests()) > asked)  # answering (a loaded machine starts slowly)
            time.sleep(rng.uniform(0.0, 2.2))
            process.send_signal(signal.SIGKILL)
            process.wait()
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
        # A kill loses the answers of the batch being written (at most a second's worth): only those are asked again.
        assert len(server.chat_requests()) < 2 * 3000 * 0.5
