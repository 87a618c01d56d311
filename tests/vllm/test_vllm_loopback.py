"""The vllm backend end to end: real chains over the loopback FakeServer's OpenAI-compatible endpoint."""

from __future__ import annotations

import json

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, Step, apply, register_engine
from chainette.errors import EngineError
from chainette.testing import FakeServer, Fault

ROWS = 12
BROKEN = "row-7"


class Item(BaseModel):
    text: str


class Tagged(BaseModel):
    value: str


class Shout(BaseModel):
    value: str


def echo(body: dict) -> str:
    """Fill every field of the requested schema with what follows 'ECHO:' in the (first) user message."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    value = prompt.split("ECHO:", 1)[1]
    if value == f"R-{BROKEN}":
        return "this is not JSON"
    properties = body["response_format"]["json_schema"]["schema"]["properties"]
    return json.dumps({name: value for name in properties})


def shout(item: Tagged) -> list[Shout]:
    return [] if item.value == "row-3" else [Shout(value=item.value.upper())]


def step(step_id: str, prompt: str, model: type[BaseModel] = Tagged, engine: str = "gpu") -> Step:
    return Step(id=step_id, output_model=model, engine_name=engine, user_prompt=prompt)


def build_chain() -> Chain:
    return Chain(
        name="vllm-loopback",
        steps=[
            Step(id="first", input_model=Item, output_model=Tagged, engine_name="gpu", user_prompt="ECHO:{{text}}"),
            [
                Branch("left", [step("left_step", "ECHO:L-{{first.value}}")]).join("left"),
                Branch("right", [step("right_step", "ECHO:R-{{first.value}}")]).join("right"),
            ],
            apply(shout, output_model=Shout),
            step("final", "ECHO:{{left.value}}|{{right.value}}|{{value}}"),
        ],
    )


def test_chain_answers_stay_aligned_with_their_rows(tmp_path):
    with FakeServer(respond=echo, latency=0.02) as server:
        register_engine("gpu", backend="vllm_api", model="fake-model", endpoint=f"{server.base_url}/v1")
        result = build_chain().run([{"text": f"row-{i}"} for i in range(ROWS)], output_dir=tmp_path / "run")
        bodies = server.chat_requests()
        max_in_flight = server.max_in_flight

    assert [t.value for t in result["first"]] == [f"row-{i}" for i in range(ROWS)]
    assert [r["row_id"] for r in result.records("left_step")] == [str(i) for i in range(ROWS)]
    assert all(r["value"] == f"L-row-{r['row_id']}" for r in result.records("left_step"))

    survivors = [i for i in range(ROWS) if f"row-{i}" not in (BROKEN, "row-3")]
    final = result.records("final")
    assert [r["row_id"] for r in final] == [str(i) for i in survivors]
    assert [r["value"] for r in final] == [f"L-row-{i}|R-row-{i}|ROW-{i}" for i in survivors]
    assert [f.value for f in result["final"]] == [r["value"] for r in final]

    flattened = result.flattened
    assert [f["row_id"] for f in flattened] == [str(i) for i in survivors]
    for line in flattened:
        i = line["row_id"]
        assert line["chain_input.text"] == f"row-{i}"
        assert line["first.value"] == f"row-{i}"
        assert (line["left.value"], line["right.value"]) == (f"L-row-{i}", f"R-row-{i}")
        assert line["shout.value"] == f"ROW-{i}"
        assert line["final.value"] == f"L-row-{i}|R-row-{i}|ROW-{i}"

    assert [(e["row_id"], e["step_id"], e["error_type"]) for e in result.errors] == [("7", "right_step", "validation")]
    broken = [b for b in bodies if f"ECHO:R-{BROKEN}" in (m["content"] for m in b["messages"])]
    assert len(broken) == 2  # the request and the core's one repair request
    assert result.stats["steps"]["first"]["input_tokens"] == 11 * ROWS
    assert result.stats["steps"]["first"]["output_tokens"] == 7 * ROWS
    assert max_in_flight > 1
    assert all(b["model"] == "fake-model" and b["response_format"]["type"] == "json_schema" for b in bodies)
    assert {b["response_format"]["json_schema"]["name"] for b in bodies} == {"Tagged"}
    assert not [key for b in bodies for key in b if key.startswith("guided_")]


def test_reasoning_is_stored_beside_the_step_output(tmp_path):
    with FakeServer(reasoning="thinking it over") as server:
        register_engine("gpu", backend="vllm", model="fake-model", endpoint=f"{server.base_url}/v1")
        chain = Chain(name="reasoning", steps=[step("think", "ECHO:{{text}}")])
        result = chain.run([{"text": "a"}, {"text": "b"}], output_dir=tmp_path / "run")

    records = result.records("think")
    assert [r["row_id"] for r in records] == ["0", "1"]
    assert all(r["think_reasoning"] == "thinking it over" for r in records)
    assert all(line["think_reasoning"] == "thinking it over" for line in result.flattened)


def test_engine_options_and_sampling_reach_the_server(tmp_path):
    from chainette import SamplingParams

    with FakeServer() as server:
        register_engine(
            "gpu",
            backend="vllm",
            model="fake-model",
            endpoint=f"{server.base_url}/v1",
            chat_template_kwargs={"enable_thinking": False},
            include_reasoning=False,
        )
        sampled = Step(
            id="s",
            output_model=Tagged,
            engine_name="gpu",
            user_prompt="{{text}}",
            sampling=SamplingParams(temperature=0.3, top_k=10, repetition_penalty=1.2, extra={"min_tokens": 2}),
        )
        Chain(name="sampling", steps=[sampled]).run([{"text": "a"}], output_dir=tmp_path / "run")
        body = server.chat_requests()[0]

    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["include_reasoning"] is False
    assert (body["temperature"], body["top_k"], body["repetition_penalty"], body["min_tokens"]) == (0.3, 10, 1.2, 2)


def test_api_key_from_default_env_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "k-123")
    with FakeServer(api_key="k-123") as server:
        register_engine("gpu", backend="vllm", model="fake-model", endpoint=f"{server.base_url}/v1")
        result = Chain(name="auth", steps=[step("s", "{{text}}")]).run([{"text": "a"}], output_dir=tmp_path / "run")
        headers = server.requests[0]["headers"]

    assert len(result["s"]) == 1
    assert headers["Authorization"] == "Bearer k-123"


def test_wrong_api_key_stops_the_run(tmp_path):
    with FakeServer(api_key="right") as server:
        register_engine("gpu", backend="vllm", model="fake-model", endpoint=f"{server.base_url}/v1", api_key="wrong-key-value")
        with pytest.raises(EngineError, match="HTTP 401") as info:
            Chain(name="auth", steps=[step("s", "{{text}}")]).run([{"text": "a"}], output_dir=tmp_path / "run")
    assert "wrong-key-value" not in str(info.value)


def test_unknown_model_stops_the_run(tmp_path):
    with FakeServer() as server:
        register_engine("gpu", backend="vllm", model="not-served", endpoint=f"{server.base_url}/v1")
        with pytest.raises(EngineError, match="serves fake-model, not 'not-served'"):
            Chain(name="missing", steps=[step("s", "{{text}}")]).run([{"text": "a"}], output_dir=tmp_path / "run")


def test_transient_server_errors_are_retried_by_the_core(tmp_path, monkeypatch):
    monkeypatch.setattr("chainette.policy.backoff_delay", lambda attempt, retry_after=None: 0.0)
    with FakeServer() as server:
        server.fail_next(Fault(status=503), Fault(status=429, retry_after=0))
        register_engine("gpu", backend="vllm", model="fake-model", endpoint=f"{server.base_url}/v1", max_concurrency=1)
        result = Chain(name="retry", steps=[step("s", "{{text}}")]).run([{"text": "a"}], output_dir=tmp_path / "run")
        attempts = len(server.chat_requests())

    assert attempts == 3
    assert len(result["s"]) == 1
    assert result.errors == []
