"""The real llama-cpp-python tier: the openai backend against llama-cpp-python's OpenAI-compatible server (built
from source) and a tiny random-weight GGUF made locally, with real grammar-constrained decoding.
`bash scripts/real-llama.sh` builds that environment and runs these tests; without it they skip.

CHAINETTE_REAL_LLAMA_PYTHON names the Python that has `llama_cpp.server`, CHAINETTE_REAL_LLAMA_MODEL the GGUF file.
"""

from __future__ import annotations

from collections.abc import Iterator
import os
import signal
import socket
import subprocess
import time
from typing import Literal

import httpx2
from pydantic import BaseModel, Field
import pytest

from chainette import Chain, SamplingParams, Step, register_engine
from chainette.errors import EngineError
from chainette_openai.probe import ServerProfileWarning
from chainette_openai.profiles import probed

PYTHON = os.environ.get("CHAINETTE_REAL_LLAMA_PYTHON")
MODEL = os.environ.get("CHAINETTE_REAL_LLAMA_MODEL")
STARTUP = 120.0
pytestmark = [
    pytest.mark.real_llama,
    pytest.mark.skipif(not (PYTHON and MODEL), reason="no llama-cpp-python server here (bash scripts/real-llama.sh builds one)"),
]


class Review(BaseModel):
    text: str


class Address(BaseModel):
    city: str = Field(max_length=10)
    zip_code: int


class Tag(BaseModel):
    label: Literal["a", "b", "c"]
    weight: float | None = None


class Person(BaseModel):
    """Nested models with descriptions, a list of models, Optional and Literal fields. Strings and the list are
    bounded: the random model would otherwise write one string until the token limit."""

    name: str = Field(max_length=12, description="The person's name")
    home: Address = Field(description="Where they live")
    tags: list[Tag] = Field(max_length=3, description="Up to three tags")
    kind: Literal["x", "y"]
    nickname: str | None = Field(None, max_length=8)


ROWS = [{"text": f"review number {i}"} for i in range(12)]


def chain(engine: str) -> Chain:
    sampling = SamplingParams(max_tokens=400, temperature=1.0)
    step = Step(id="person", input_model=Review, output_model=Person, engine_name=engine, user_prompt="{{text}}", sampling=sampling)
    return Chain(name="real-llama", steps=[step])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A llama-cpp-python server on a free loopback port, in its own process group, stopped at the end."""
    port = free_port()
    command = [
        PYTHON or "",
        "-m",
        "llama_cpp.server",
        "--model",
        MODEL or "",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model_alias",
        "tiny",
    ]
    process = subprocess.Popen(
        [*command, "--n_ctx", "2048", "--chat_format", "chatml"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            assert process.poll() is None, "llama_cpp.server exited while starting"
            try:
                if httpx2.get(f"{url}/models", timeout=2.0).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, f"llama_cpp.server did not answer in {STARTUP} s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_the_llama_cpp_preset_answers_a_nested_model_chain(server, tmp_path):
    """json_object with the schema under `schema`, the limit in max_tokens: every row answered and validated."""
    register_engine("llama", backend="openai", model="tiny", endpoint=server, profile="llama-cpp", max_concurrency=2)
    result = chain("llama").run(ROWS, output_dir=tmp_path / "run", cache=False)
    people = result["person"]
    assert len(people) + len(result.errors) == len(ROWS)
    assert len(people) >= len(ROWS) - 2, result.errors
    assert all(isinstance(person, Person) for person in people)


def test_the_probe_finds_how_the_server_wants_the_schema(server, tmp_path):
    probed.clear()
    register_engine("probed", backend="openai", model="tiny", endpoint=server, profile="auto", max_concurrency=2)
    with pytest.warns(ServerProfileWarning, match="structured_output='json_object', token_limit='max_tokens'"):
        result = chain("probed").run(ROWS[:4], output_dir=tmp_path / "run", cache=False)
    assert len(result["person"]) + len(result.errors) == 4
    assert len(result["person"]) >= 3


def test_the_token_limit_is_honoured_in_max_tokens(server, tmp_path):
    """llama-cpp-python ignores max_completion_tokens; the preset's max_tokens caps the answer (cut off: truncated)."""
    register_engine("capped", backend="openai", model="tiny", endpoint=server, profile="llama-cpp")
    sampling = SamplingParams(max_tokens=5)
    step = Step(id="person", input_model=Review, output_model=Person, engine_name="capped", user_prompt="{{text}}", sampling=sampling)
    result = Chain(name="capped", steps=[step]).run(ROWS[:2], output_dir=tmp_path / "run", cache=False)
    assert [error["error_type"] for error in result.errors] == ["truncated", "truncated"]


def test_a_json_schema_request_it_rejects_stops_the_step_fast(server, tmp_path):
    """The generic profile's json_schema gets HTTP 500 on every row: the step stops after its first rows with one
    paragraph naming the engine and the server's message, instead of retrying and failing every row."""
    register_engine("generic", backend="openai", model="tiny", endpoint=server, max_concurrency=1, max_retries=1)
    with pytest.raises(EngineError) as info:
        chain("generic").run(ROWS, output_dir=tmp_path / "run", cache=False)
    message = str(info.value)
    assert "engine 'generic'" in message and "HTTP 500" in message and "json_object" in message and "profile=" in message
    errors = (tmp_path / "run" / "errors.jsonl").read_text().splitlines()
    assert len(errors) < len(ROWS)
