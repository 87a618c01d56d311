"""Batch mode on the anthropic backend, against FakeAnthropic's Message Batches: answers aligned and validated as
online, each request's params checked against the SDK's request type, errored, expired and canceled requests, row ids
the API's custom_id cannot carry, re-attaching after kill -9, Ctrl-C cancelling, and the discount."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import textwrap
import time

from pydantic import TypeAdapter
import pytest

pytest.importorskip("anthropic")

from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

from chainette import register_engine
from chainette.pricing import Price
from chainette_anthropic.batch import IDS_FOLDER, wire_id
from chainette_anthropic.testing import FakeAnthropic

from ..batch_chain import Label, Text, chain, echo, fast, labels, rows  # noqa: F401 (fast: an autouse fixture)

KEY = "sk-ant-BATCH-0a1b2c"
PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)


@pytest.fixture
def server():
    with FakeAnthropic(respond=echo, api_key=KEY) as running:
        running.polls_to_finish = 1
        yield running


def engine(server: FakeAnthropic, **options) -> None:
    options = {"batch": True, "batch_poll_seconds": 0.01, **options}
    register_engine("llm", backend="anthropic", model="fake-model", endpoint=server.base_url, api_key=KEY, **options)


def created(server: FakeAnthropic) -> list[dict]:
    return [r["body"] for r in server.requests if r["path"] == "/v1/messages/batches"]


def test_a_chain_answered_through_message_batches_keeps_every_row_aligned(server, tmp_path):
    engine(server)
    result = chain().run(rows(12), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(12)}
    assert server.chat_requests() == [], "no online request"
    batches = created(server)
    assert len(batches) == 2, "one batch per step"
    first = batches[0]["requests"][0]
    assert first["custom_id"] == "q-0-0"
    PARAMS.validate_python(first["params"])
    assert set(first["params"]) <= MessageCreateParamsNonStreaming.__annotations__.keys()
    assert first["params"]["output_config"]["format"]["type"] == "json_schema" and first["params"]["max_tokens"] == 4096
    figures = result.stats["steps"]["label"]
    assert figures["ok"] == 12 and figures["requests"] == 12 and figures["input_tokens"] == 12 * 11


def test_errored_requests_fail_their_rows_or_are_asked_again_and_expired_ones_are_asked_again(server, tmp_path):
    engine(server)
    seen: dict[str, int] = {}

    def error(custom_id: str) -> str | None:
        seen[custom_id] = seen.get(custom_id, 0) + 1
        if custom_id == "q-0-3":
            return "invalid_request_error"
        return "overloaded_error" if custom_id.endswith(("-5", "-7")) and seen[custom_id] == 1 else None

    server.batch_error = error
    server.expire = lambda custom_id: custom_id == "q-0-1" and len(server.message_batches) == 1
    result = chain(two=False).run(rows(10), output_dir=tmp_path / "out")
    assert set(labels(result, "label")) == {str(i) for i in range(10)} - {"3"}
    [failed] = result.errors
    assert failed["row_id"] == "3" and failed["error_type"] == "http_400" and "injected invalid_request_error" in failed["message"]
    assert len(created(server)) == 2, "the batch, then one for rows 1, 5 and 7"
    assert sorted(r["custom_id"] for r in created(server)[1]["requests"]) == ["q-0-1", "q-0-5", "q-0-7"]


def test_row_ids_the_api_cannot_carry_go_as_digests_and_come_back_to_their_rows(server, tmp_path):
    engine(server)
    ids = ["a/b:c", "x" * 80, "plain-id_1"]
    inputs = [{"id": row_id, "text": f"row{index}"} for index, row_id in enumerate(ids)]
    result = chain(two=False).run(inputs, output_dir=tmp_path / "out", id_column="id")
    assert labels(result, "label") == {row_id: f"row{index}" for index, row_id in enumerate(ids)}
    sent = [r["custom_id"] for r in created(server)[0]["requests"]]
    assert sorted(sent) == sorted(wire_id(f"q-0-{row_id}") for row_id in ids)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", custom_id) for custom_id in sent) and "q-0-plain-id_1" in sent
    [kept] = (tmp_path / "out" / IDS_FOLDER).iterdir()
    assert sorted(json.loads(kept.read_text()).values()) == sorted(f"q-0-{row_id}" for row_id in ids[:2])


def test_the_batch_discount_halves_every_kind_of_token():
    from chainette.engines import engine_price, get_engine

    register_engine("online", backend="anthropic", model="claude-sonnet-4-5", api_key=KEY)
    register_engine("offline", backend="anthropic", model="claude-sonnet-4-5", api_key=KEY, batch=True)
    assert engine_price(get_engine("online")) == Price(3.00, 15.00, cache_read=0.30, cache_write=3.75)
    assert engine_price(get_engine("offline")) == Price(1.50, 7.50, cache_read=0.15, cache_write=1.875)


CHAIN = """
import os
from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="anthropic", model="fake-model", endpoint=os.environ["FAKE_URL"], api_key=os.environ["FAKE_KEY"],
                batch=True, batch_poll_seconds=0.05)
chain = Chain(name="batched", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")])
"""


class Project:
    """A one-step batch chain run by `chainette run` in a subprocess, its rows with ids the API cannot carry."""

    def __init__(self, root: Path, url: str, rows: int):
        self.chain = root / "batched.py"
        self.chain.write_text(textwrap.dedent(CHAIN))
        self.inputs = root / "in.jsonl"
        self.inputs.write_text("".join(json.dumps({"id": f"doc/{i}", "text": f"row{i}"}) + "\n" for i in range(rows)))
        self.out = root / "out"
        self.env = {**os.environ, "FAKE_URL": url, "FAKE_KEY": KEY, "CHAINETTE_LOAD_PLUGINS": "anthropic", "COLUMNS": "200"}

    def args(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "chainette",
            "run",
            f"{self.chain}:chain",
            "-i",
            str(self.inputs),
            "-o",
            str(self.out),
            "--id-column",
            "id",
            *extra,
        ]

    def start(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.args(*extra), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def submitted(self) -> bool:
        journal = self.out / ".chainette" / "batches" / "label" / "journal.jsonl"
        return journal.exists() and '"batch_id"' in journal.read_text()

    def wait_submitted(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.submitted():
            assert time.monotonic() < deadline, "the run never submitted its batch"
            time.sleep(0.01)

    def labels(self) -> dict[str, str]:
        lines = [json.loads(line) for path in sorted((self.out / "label").glob("*.jsonl")) for line in path.read_text().splitlines()]
        return {line["row_id"]: line["label"] for line in lines}


def test_kill_9_while_a_batch_runs_and_the_rerun_re_attaches_and_matches_its_results(server, tmp_path):
    server.polls_to_finish = 10**6
    project = Project(tmp_path, server.base_url, 6)
    process = project.start()
    project.wait_submitted()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(created(server)) == 1

    server.polls_to_finish = 1
    done = subprocess.run(project.args(), env=project.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(created(server)) == 1, "the rerun re-attached to the batch instead of submitting it again"
    assert project.labels() == {f"doc/{i}": f"row{i}" for i in range(6)}, "every digest matched back to its row"


def test_ctrl_c_with_cancel_batches_cancels_and_the_rerun_asks_the_canceled_requests_again(server, tmp_path):
    server.polls_to_finish = 10**6
    project = Project(tmp_path, server.base_url, 4)
    process = project.start("--cancel-batches")
    project.wait_submitted()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "label: 1 batches cancelled" in out
    assert server.cancelled_batches == [next(iter(server.message_batches))]

    server.polls_to_finish = 1
    done = subprocess.run(project.args(), env=project.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert project.labels() == {f"doc/{i}": f"row{i}" for i in range(4)}
    assert len(created(server)) == 2, "the canceled requests asked again in a new batch"
