"""A planted API key never appears in anything chainette writes: output files, stdout, stderr, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chainette.outcome import EXIT_SOME_ROWS_FAILED
from chainette.testing import FakeServer, FaultPlan

from .conftest import Project, echo

KEY = "sk-PLANTED-7f3e9c1d2b4a"

OPENAI_CHAIN = """
import os
from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="{backend}", model="fake-model", endpoint=os.environ["FAKE_URL"] + "/v1",
                api_key_env="PLANTED_KEY", max_retries=1, timeout=2)
chain = Chain(name="secret", steps=[Step(id="s", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{{{text}}}}>>")])
"""


@pytest.mark.parametrize("backend", ["openai", "vllm"])
def test_planted_key_is_never_written(tmp_path, backend, every_byte, cache_dir):
    pytest.importorskip(f"chainette_{backend}")
    plan = FaultPlan(seed=3, server_error=0.2, malformed=0.1, rate_limit=0.1, retry_after=0.01)
    with FakeServer(respond=echo, api_key=KEY, plan=plan) as server:
        project = Project(tmp_path, server.base_url, 30)
        project.chain.write_text(OPENAI_CHAIN.format(backend=backend))
        project.env.update(PLANTED_KEY=KEY, CHAINETTE_LOAD_PLUGINS=backend)
        ran = project.run("--debug")
        assert ran.returncode == EXIT_SOME_ROWS_FAILED, ran.stderr
        assert (project.out / "errors.jsonl").read_text(), "some rows failed, so errors were written"
        assert all(KEY in request["headers"].get("Authorization", "") for request in server.requests), "the key was used"

        server.api_key = "sk-another-key"
        refused = project.run("--debug", "--overwrite")
    assert refused.returncode != 0 and "401" in refused.stderr and "Traceback" in refused.stderr
    assert every_byte(cache_dir), "answers were cached"
    written = (
        every_byte(project.out)
        + every_byte(cache_dir)
        + ran.stdout.encode()
        + ran.stderr.encode()
        + refused.stdout.encode()
        + refused.stderr.encode()
    )
    assert KEY.encode() not in written
    assert KEY[-8:].encode() not in written


def secret_project(tmp_path, server: FakeServer, backend: str = "openai") -> Project:
    """A one-step chain on `backend` whose engine reads its key from the environment variable PLANTED_KEY."""
    project = Project(tmp_path, server.base_url, 5)
    project.chain.write_text(OPENAI_CHAIN.format(backend=backend))
    project.env.update(CHAINETTE_LOAD_PLUGINS=backend)
    return project


def test_a_key_ending_in_a_newline_is_stripped_and_works(tmp_path, every_byte):
    pytest.importorskip("chainette_openai")
    with FakeServer(respond=echo, api_key=KEY) as server:
        project = secret_project(tmp_path, server)
        project.env["PLANTED_KEY"] = f"  {KEY}\r\n"
        ran = project.run("--debug")
    assert ran.returncode == 0, ran.stderr
    assert len(server.chat_requests()) == 5
    assert {request["headers"]["Authorization"] for request in server.requests} == {f"Bearer {KEY}"}
    assert KEY[-8:].encode() not in every_byte(project.out) + ran.stdout.encode() + ran.stderr.encode()


@pytest.mark.parametrize("value", [f"{KEY[:10]}\n{KEY[10:]}", f"{KEY}\x00", f"{KEY}\tsk-second"])
def test_a_key_holding_a_control_character_is_refused_naming_the_variable(tmp_path, every_byte, value):
    pytest.importorskip("chainette_openai")
    with FakeServer(respond=echo, api_key=KEY) as server:
        project = secret_project(tmp_path, server)
        project.env["PLANTED_KEY"] = value.replace("\x00", "\x01")  # an environment value cannot hold NUL
        ran = project.run()
    assert ran.returncode == 1
    assert "PLANTED_KEY" in ran.stderr and "control character" in ran.stderr and "Traceback" not in ran.stderr
    assert server.requests == [], "refused before any request"
    assert KEY[-8:] not in ran.stdout + ran.stderr
    assert not project.out.exists()


@pytest.mark.parametrize("value", [None, "", "  \n"])
def test_an_unset_api_key_env_variable_is_named_before_any_request(tmp_path, value):
    pytest.importorskip("chainette_openai")
    with FakeServer(respond=echo, api_key=KEY) as server:
        project = secret_project(tmp_path, server)
        project.env.pop("PLANTED_KEY", None)
        if value is not None:
            project.env["PLANTED_KEY"] = value
        ran = project.run()
    assert ran.returncode == 1, ran.stderr
    assert "Engine 'llm': api_key_env names the environment variable PLANTED_KEY" in ran.stderr
    assert "401" not in ran.stderr and "Traceback" not in ran.stderr
    assert server.requests == []


@pytest.mark.parametrize("backend", ["openai", "vllm", "ollama"])
def test_a_token_in_the_endpoint_query_string_is_sent_and_never_written(tmp_path, backend, every_byte):
    pytest.importorskip(f"chainette_{backend}")
    with FakeServer(respond=echo) as server:
        project = secret_project(tmp_path, server, backend)
        path = "" if backend == "ollama" else "/v1"
        project.chain.write_text(
            OPENAI_CHAIN.format(backend=backend).replace(
                'os.environ["FAKE_URL"] + "/v1"', f'os.environ["FAKE_URL"] + "{path}?api-key={KEY}"'
            )
        )
        project.env["PLANTED_KEY"] = "unused-key"
        ran = project.run("--debug", "--json-logs")
        inspected = subprocess.run(
            [sys.executable, "-m", "chainette", "inspect", f"{project.chain}:chain", "-f", "json"],
            env=project.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert ran.returncode == 0, ran.stderr
    assert inspected.returncode == 0, inspected.stderr
    assert len(server.chat_requests()) == 5
    assert {request["query"] for request in server.requests} == {f"api-key={KEY}"}, "the query string is sent with every request"
    shown = every_byte(project.out) + (ran.stdout + ran.stderr + inspected.stdout + inspected.stderr).encode()
    assert KEY[-8:].encode() not in shown
    assert "api-key=**********" in (project.out / "graph.json").read_text()
    assert "api-key=**********" in ran.stdout, "the JSON log names the endpoint, masked"
