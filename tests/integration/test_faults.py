"""A long run against a server that misbehaves in every way the fault plan knows: every row is
accounted for exactly once, answers stay aligned, and nearly all rows succeed."""

from __future__ import annotations

from collections import Counter
import json

import pytest

from chainette import Chain, Step, register_engine
import chainette.policy
from chainette.testing import FakeServer, FaultPlan

from .conftest import echo

ROWS = 5000


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.01)
    monkeypatch.setattr(chainette.policy, "MAX_DELAY", 0.2)


def test_five_thousand_rows_through_faults(tmp_path):
    from pydantic import BaseModel

    class Text(BaseModel):
        text: str

    class Label(BaseModel):
        label: str

    plan = FaultPlan(seed=7, rate_limit=0.05, server_error=0.02, malformed=0.02, prose=0.01, hang=0.005, retry_after=0.02, hang_seconds=2.0)
    with FakeServer(respond=echo, plan=plan) as server:
        register_engine("llm", backend="vllm", model="fake-model", endpoint=f"{server.base_url}/v1", max_concurrency=64, timeout=0.5)
        first = Step(id="first", input_model=Text, output_model=Label, engine_name="llm", user_prompt="A <<{{text}}>>")
        second = Step(id="second", output_model=Label, engine_name="llm", user_prompt="B <<{{label}}>>")
        result = Chain(name="faults", steps=[first, second]).run([{"text": f"row{i}"} for i in range(ROWS)], output_dir=tmp_path / "out")
        sent = Counter(json.dumps(body, sort_keys=True) for body in server.chat_requests())

    first_draws = {body: plan.draw(json.loads(body), 1) for body in sent}
    kinds = Counter(first_draws.values())
    assert kinds["rate_limit"] and kinds["server_error"] and kinds["malformed"] and kinds["prose"] and kinds["hang"], (
        "every fault kind happened"
    )
    assert all(sent[body] == 1 for body, kind in first_draws.items() if kind in (None, "malformed", "prose")), (
        "a good answer is never re-sent"
    )
    assert all(sent[body] >= 2 for body, kind in first_draws.items() if kind in ("rate_limit", "server_error", "hang")), (
        "a failure is retried"
    )
    finals = result.records("second")
    errors = result.errors
    final_ids = [r["row_id"] for r in finals]
    failed_ids = [e["row_id"] for e in errors]
    assert len(final_ids) == len(set(final_ids)), "no row twice in the final output"
    assert len(failed_ids) == len(set(failed_ids)), "no row failed twice"
    assert sorted(map(int, final_ids + failed_ids)) == list(range(ROWS)), "every row exactly once"
    assert all(r["label"] == f"row{r['row_id']}" for r in finals), "answers aligned with their rows"
    assert len(finals) >= 0.99 * ROWS
    stats = json.loads((tmp_path / "out" / "run.json").read_text())
    assert stats["steps"]["first"]["ok"] + stats["steps"]["first"]["failed"] == ROWS
