"""Helpers for end-to-end tests: a two-step chain file on the vllm backend, run as `chainette run` subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("chainette_vllm")

CHAIN = """
from pydantic import BaseModel
from chainette import Chain, Step, register_engine
import os

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="vllm", model="fake-model", endpoint=os.environ["FAKE_URL"] + "/v1",
                max_concurrency={concurrency}, timeout={timeout})
first = Step(id="first", input_model=Text, output_model=Label, engine_name="llm", user_prompt="A <<{{{{text}}}}>>")
second = Step(id="second", output_model=Label, engine_name="llm", user_prompt="B <<{{{{label}}}}>>")
chain = Chain(name="two", steps=[first, second])
"""


def first_user_message(body: dict) -> str:
    """The row's prompt (a repair request adds messages after it)."""
    return next(message["content"] for message in body["messages"] if message["role"] == "user")


def echo(body: dict) -> str:
    """Label each row with the text between << >> of its prompt, so alignment can be checked."""
    return json.dumps({"label": re.search(r"<<(.*?)>>", first_user_message(body)).group(1)})


def request_key(body: dict) -> str:
    return first_user_message(body)


class Project:
    """A chain file, an input file and an output directory, run through the CLI in a subprocess."""

    def __init__(self, root: Path, url: str, rows: int, concurrency: int = 8, timeout: float = 30):
        self.root = root
        self.chain = root / "two_steps.py"
        self.chain.write_text(textwrap.dedent(CHAIN.format(concurrency=concurrency, timeout=timeout)))
        self.inputs = root / "in.jsonl"
        self.inputs.write_text("".join(json.dumps({"text": f"row{i}"}) + "\n" for i in range(rows)))
        self.out = root / "out"
        self.env = {**os.environ, "FAKE_URL": url, "CHAINETTE_LOAD_PLUGINS": "vllm", "COLUMNS": "200"}
        self.rows = rows

    def args(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "chainette", "run", f"{self.chain}:chain", "-i", str(self.inputs), "-o", str(self.out), *extra]

    def start(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.args(*extra), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args(*extra), env=self.env, capture_output=True, text=True, timeout=120)

    def outputs(self, step: str) -> list[dict]:
        return [json.loads(line) for path in sorted((self.out / step).glob("*.jsonl")) for line in path.read_text().splitlines()]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to get there")
        time.sleep(0.01)
