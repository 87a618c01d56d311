"""Several samples per row: `SamplingParams(n=...)` fans each row out into n candidates, sent as one request where
the backend sends `n` (OpenAI, vLLM) and as n requests elsewhere; every candidate is validated (and repaired) alone."""

from __future__ import annotations

import json
import random

import pytest

from chainette import Chain, SamplingParams, Step, register_engine
from chainette.testing import FakeServer

from .conftest import Label, Text
from .test_run import echo, label_step


def numbered(request, attempt):
    """A different label for each request of a row, so that candidates can be told apart."""
    return json.dumps({"label": f"{request.row_id}#{attempt}", "score": 0.5})


def test_n_candidates_become_n_children_when_the_backend_does_not_send_n(scripted, tmp_path):
    backend = scripted(lambda request, attempt: echo(request, attempt) if request.step_id == "check" else numbered(request, attempt))
    register_engine("s", backend="scripted", model="m", max_concurrency=4)
    draft = label_step(id="draft", sampling=SamplingParams(n=3))
    check = label_step(id="check", prompt="<<{{label}}>>", input_model=None)
    result = Chain(name="c", steps=[draft, check]).run([{"text": f"t{i}"} for i in range(4)], output_dir=tmp_path / "o")

    assert len([r for r in backend.requests if r.step_id == "draft"]) == 12, "three requests per row"
    assert all("n" not in r.sampling for r in backend.requests)
    drafts = result.records("draft")
    assert [r["row_id"] for r in drafts] == [f"{i}-{k}" for i in range(4) for k in range(3)]
    assert all(r["row_index"] == int(r["row_id"].split("-")[0]) for r in drafts)
    for row in range(4):
        labels = {r["label"] for r in drafts if r["row_index"] == row}
        assert labels == {f"{row}#{attempt}" for attempt in (1, 2, 3)}, "each child holds its own candidate"
    flat = result.flattened
    assert len(flat) == 12 and all(line["chain_input.text"] == f"t{line['row_index']}" for line in flat)
    assert all(line["check.label"] == line["draft.label"] for line in flat), "a later step reads each candidate"
    stats = result.stats["steps"]
    assert (stats["draft"]["rows_in"], stats["draft"]["ok"], stats["check"]["rows_in"]) == (4, 4, 12)


def test_an_invalid_candidate_is_repaired_alone_and_a_lasting_one_fails_the_row(scripted, tmp_path):
    def answer(request, attempt):
        if request.messages[-1]["content"].startswith("<<t1>>") and attempt == 2:
            return "not json"
        if request.row_id == "2" and attempt >= 2:
            return "still not json"
        return numbered(request, attempt)

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=1)
    step = label_step(id="draft", sampling=SamplingParams(n=2))
    result = Chain(name="c", steps=[step]).run([{"text": f"t{i}"} for i in range(3)], output_dir=tmp_path / "o")
    assert sorted(r["row_id"] for r in result.records("draft")) == ["0-0", "0-1", "1-0", "1-1"]
    assert [(e["row_id"], e["error_type"]) for e in result.errors] == [("2", "validation")], "the row fails once, by its own id"
    repairs = [r for r in backend.requests if r.row_id == "1"]
    assert len(repairs) == 3 and "not json" in repairs[-1].messages[-2]["content"], "one repair, for the bad candidate only"


@pytest.mark.parametrize("backend", ["openai", "vllm"])
def test_servers_that_take_n_get_one_request_per_row(tmp_path, backend):
    pytest.importorskip(f"chainette_{backend}")
    answers = random.Random(3)
    with FakeServer(models=("m",), respond=lambda body: json.dumps({"label": f"x{answers.random():.6f}", "score": 0.5})) as server:
        register_engine("llm", backend=backend, model="m", endpoint=f"{server.base_url}/v1", api_key="sk-test")
        step = Step(
            id="draft", input_model=Text, output_model=Label, engine_name="llm", user_prompt="{{text}}", sampling=SamplingParams(n=4)
        )
        result = Chain(name="c", steps=[step]).run([{"text": "a"}, {"text": "b"}], output_dir=tmp_path / "o")
        bodies = server.chat_requests()
    assert len(bodies) == 2 and all(body["n"] == 4 for body in bodies)
    drafts = result.records("draft")
    assert sorted(r["row_id"] for r in drafts) == ["0-0", "0-1", "0-2", "0-3", "1-0", "1-1", "1-2", "1-3"]
    assert len({r["label"] for r in drafts}) == 8, "every choice of the answer is kept"
