"""A planted API key never appears in anything chainette writes: output files, stdout, stderr, --debug tracebacks."""

from __future__ import annotations

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
