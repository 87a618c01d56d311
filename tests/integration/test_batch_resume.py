"""Batch jobs across processes: kill -9 while a batch is in flight and the same command re-attaches to it instead of
submitting it again; Ctrl-C leaves the batches running (or cancels them with --cancel-batches) and says how to go on."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import textwrap
import time

import pytest

from chainette.testing import FakeServer

from .conftest import Project, echo, wait_for

pytest.importorskip("chainette_openai")

CHAIN = """
import os
from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="openai", model="fake-model", endpoint=os.environ["FAKE_URL"] + "/v1", api_key="sk-batch",
                batch=True, batch_poll_seconds=0.05)
first = Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="A <<{{text}}>>")
second = Step(id="again", output_model=Label, engine_name="llm", user_prompt="B <<{{label.label}}>>")
chain = Chain(name="batched", steps=[first, second])
"""
ROWS = 40
SOAK = int(os.environ.get("CHAINETTE_SOAK", "1"))


class BatchProject(Project):
    """The two-step project of conftest, its engine answering through batch jobs on the openai backend."""

    def __init__(self, root: Path, url: str):
        super().__init__(root, url, ROWS)
        self.chain.write_text(textwrap.dedent(CHAIN))
        self.env["CHAINETTE_LOAD_PLUGINS"] = "openai"

    def submitted(self) -> bool:
        journal = self.out / ".chainette" / "batches" / "label" / "journal.jsonl"
        return journal.exists() and '"batch_id"' in journal.read_text()

    def labels(self) -> dict[str, str]:
        return {line["row_id"]: line["label"] for line in self.outputs("again")}


@pytest.fixture
def server():
    with FakeServer(respond=echo) as running:
        running.batches.polls_to_finish = 10**6
        yield running


def test_kill_9_while_a_batch_runs_and_the_rerun_re_attaches_to_it(server, tmp_path):
    project = BatchProject(tmp_path, server.base_url)
    process = project.start()
    wait_for(project.submitted)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(server.batches.created) == 1

    server.batches.polls_to_finish = 1
    done = project.run()
    assert done.returncode == 0, done.stderr
    assert len(server.batches.created) == 2, "label's batch re-attached, then one for again"
    assert project.labels() == {str(i): f"row{i}" for i in range(ROWS)}


@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_leaves_the_batches_running_or_cancels_them(server, tmp_path, cancel):
    project = BatchProject(tmp_path, server.base_url)
    process = project.start(*(["--cancel-batches"] if cancel else []))
    wait_for(project.submitted)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    said = "cancelled" if cancel else "left running on the server"
    assert f"label: 1 batches {said}" in out and "run the same command again" in out
    assert server.batches.cancelled == (server.batches.created[:1] if cancel else [])

    server.batches.polls_to_finish = 1
    done = project.run()
    assert done.returncode == 0, done.stderr
    assert project.labels() == {str(i): f"row{i}" for i in range(ROWS)}
    assert len(server.batches.created) == (3 if cancel else 2), "a cancelled batch's rows are asked again"


@pytest.mark.parametrize("answer", ["y", "n"])
def test_ctrl_c_in_a_terminal_asks_whether_to_cancel_the_batches(server, tmp_path, answer):
    import pty

    project = BatchProject(tmp_path, server.base_url)
    leader, follower = pty.openpty()
    process = subprocess.Popen(project.args(), env=project.env, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(follower)
    try:
        wait_for(project.submitted)
        process.send_signal(signal.SIGINT)
        os.write(leader, f"{answer}\n".encode())
        _, err = process.communicate(timeout=60)
    finally:
        os.close(leader)
    assert process.returncode == 130
    assert "1 batch jobs keep running on the provider. Cancel them?" in err
    if answer == "y":
        assert server.batches.cancelled == server.batches.created[:1] and "Cancelled 1 batch jobs" in err
    else:
        assert server.batches.cancelled == [] and "They keep running" in err


@pytest.mark.parametrize("seed", range(3 * SOAK))
def test_kill_9_at_random_instants_of_a_batch_run_loses_and_repeats_no_row(server, tmp_path, seed):
    """Batches that expire half answered (so each step takes rounds of follow-ups) and invalid first answers (repair
    batches); the run is killed twice at random instants, then finished: every row once, each its own answer."""
    import random

    rng = random.Random(seed)
    server.batches.polls_to_finish = 2
    server.batches.outcome = "expired"
    server.respond = lambda body: echo(body) if len(body["messages"]) > 2 or rng.random() < 0.7 else "not json"
    project = BatchProject(tmp_path, server.base_url)
    for _ in range(2):
        process = project.start()
        time.sleep(rng.uniform(0.3, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = project.run()
    assert done.returncode in (0, 3), done.stderr
    answered = project.outputs("again")
    errors_file = project.out / "errors.jsonl"
    errors = [json.loads(line) for line in errors_file.read_text().splitlines()] if errors_file.exists() else []
    assert sorted([row["row_index"] for row in answered] + [error["row_index"] for error in errors]) == list(range(ROWS))
    assert all(row["label"] == f"row{row['row_id']}" for row in answered)
