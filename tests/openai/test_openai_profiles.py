"""Server profiles on the loopback server: what each preset sends, the probe behind profile="auto" against servers
that behave like vLLM, llama-cpp-python and a server without structured output, and the fast stop of a step
whose server rejects the form it is sent."""

from __future__ import annotations

from collections.abc import Iterator
import json

from pydantic import BaseModel
import pytest

from chainette import Chain, SamplingParams, Step, register_engine
from chainette.backends.fake import synthesize
from chainette.errors import EngineError
from chainette.testing import FakeServer
from chainette_openai.probe import ServerProfileWarning
from chainette_openai.profiles import PRESETS, probed

ROWS = [{"text": f"row {i}"} for i in range(12)]


class Label(BaseModel):
    label: str


@pytest.fixture(autouse=True)
def forget_probes() -> Iterator[None]:
    probed.clear()
    yield
    probed.clear()


def run(server: FakeServer, tmp_path, rows=ROWS, **options):
    register_engine("local", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", max_retries=1, **options)
    step = Step(id="label", output_model=Label, engine_name="local", user_prompt="{{ text }}", sampling=SamplingParams(max_tokens=64))
    return Chain(name="profiles", steps=[step]).run(rows, output_dir=tmp_path / "run", cache=False)


@pytest.mark.parametrize(
    ("profile", "response_format", "limit"),
    [
        ("generic", {"type": "json_schema", "json_schema": {"name": "Label", "schema": Label.model_json_schema()}}, "max_tokens"),
        ("vllm", {"type": "json_schema", "json_schema": {"name": "Label", "schema": Label.model_json_schema()}}, "max_completion_tokens"),
        ("llama-cpp", {"type": "json_object", "schema": Label.model_json_schema()}, "max_tokens"),
        ("tgi", {"type": "json_object", "value": Label.model_json_schema()}, "max_tokens"),
    ],
)
def test_what_each_preset_sends(tmp_path, profile, response_format, limit):
    with FakeServer() as server:
        result = run(server, tmp_path, ROWS[:2], profile=profile)
    assert len(result["label"]) == 2
    body = server.chat_requests()[0]
    assert body["response_format"] == response_format
    other = ({"max_tokens", "max_completion_tokens"} - {limit}).pop()
    assert body[limit] == 64 and other not in body


def test_every_preset_names_a_known_form():
    assert {p.structured_output for p in PRESETS.values()} <= {"json_schema", "json_object", "json_object_value", "prompt"}
    assert [name for name, p in PRESETS.items() if p.strict] == ["openai"], "only OpenAI itself gets strict mode"


def test_prompt_mode_sends_no_response_format_and_still_validates(tmp_path):
    with FakeServer(respond=lambda body: 'Here it is: {"label": "x"}') as server:
        result = run(server, tmp_path, ROWS[:3], structured_output="prompt")
    assert [answer.label for answer in result["label"]] == ["x", "x", "x"]
    body = server.chat_requests()[0]
    assert "response_format" not in body
    assert "JSON schema" in body["messages"][0]["content"], "the schema is in the prompt"


def follow_the_prompt(body: dict) -> str:
    """Like a model: the schema's JSON when the server applies one, else what the prompt asks for."""
    wanted = body.get("response_format")
    if wanted:
        schema = wanted.get("json_schema", {}).get("schema") or wanted.get("schema") or wanted.get("value")
        return json.dumps(synthesize(schema, seed_text=""))
    return '{"label": "x"}'


@pytest.mark.parametrize(
    ("server_options", "found"),
    [
        ({}, ("json_schema", "max_completion_tokens")),
        ({"rejects": ("json_schema",), "token_fields": ("max_tokens",)}, ("json_object", "max_tokens")),
        ({"rejects": ("json_schema", "json_object")}, ("prompt", "max_completion_tokens")),
    ],
    ids=["like-vllm", "like-llama-cpp-python", "no-structured-output"],
)
def test_the_probe_picks_the_form_the_server_takes(tmp_path, server_options, found):
    with FakeServer(respond=follow_the_prompt, **server_options) as server, pytest.warns(ServerProfileWarning) as warned:
        result = run(server, tmp_path, profile="auto")
    assert len(result["label"]) == len(ROWS) and result.errors == []
    structured, limit = found
    assert f"structured_output={structured!r}, token_limit={limit!r}" in str(warned[0].message)
    rows = [body for body in server.chat_requests() if body["messages"][-1]["content"].startswith("row")]
    assert len(rows) == len(ROWS)
    assert all(body[limit] == 64 for body in rows)
    assert {(body.get("response_format") or {}).get("type") for body in rows} == {
        {"json_schema": "json_schema", "json_object": "json_object", "prompt": None}[structured]
    }


def test_a_server_is_probed_once_for_its_engines(tmp_path):
    with FakeServer(rejects=("json_schema",)) as server, pytest.warns(ServerProfileWarning):
        run(server, tmp_path, ROWS[:1], profile="auto")
        probes = len(server.chat_requests())
        run(server, tmp_path / "again", ROWS[:1], profile="auto")
    assert len(server.chat_requests()) == probes + 1


def test_a_rejected_form_stops_the_step_after_its_first_rows(tmp_path):
    """llama-cpp-python answers json_schema with HTTP 500 on every row: after the first rows' retries, the step stops
    with one paragraph instead of filling errors.jsonl, and the run is resumable with the right profile."""
    with FakeServer(rejects=("json_schema",)) as server:
        register_engine("local", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", max_retries=1, max_concurrency=1)
        step = Step(id="label", output_model=Label, engine_name="local", user_prompt="{{ text }}")
        chain = Chain(name="profiles", steps=[step])
        with pytest.raises(EngineError) as info:
            chain.run(ROWS, output_dir=tmp_path / "run", cache=False)
        errors = (tmp_path / "run" / "errors.jsonl").read_text().splitlines()
        message = str(info.value)
        assert "engine 'local'" in message and "HTTP 500" in message and "'text' or 'json_object'" in message
        assert "set the engine's profile= to the server's preset" in message, "the backend's own advice"
        assert len(errors) == 5 < len(ROWS)
        register_engine("local", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", profile="llama-cpp")
        result = chain.run(ROWS, output_dir=tmp_path / "run", cache=False, retry_errors=True)
    assert len(result["label"]) == len(ROWS) and result.errors == []
