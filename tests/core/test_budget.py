"""A run's budget (--max-cost, max_cost=): the run stops gracefully once this session's spending, requests in flight
included, reaches it; never spends more than the budget plus the requests then in flight; resumes with a budget of
its own; and is refused at start for an engine with no price, or a budget that is not an amount."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from chainette import Chain, register_engine
from chainette.errors import ConfigError, RunInterrupted
from chainette.run.budget import EXIT_BUDGET_REACHED
from chainette.ui.summary import summary

from .test_cli import EXAMPLE, chainette
from .test_run import label_step, rows

PRICE = 10.0  # USD per million tokens: a fake request (about 75 tokens) costs less than a thousandth of a dollar
SLOTS = 4


def priced_fake():
    prices = {"price_per_million_input": PRICE, "price_per_million_output": PRICE}
    register_engine("s", backend="fake", model="m", max_concurrency=SLOTS, latency=0.001, **prices)


def request_cost(step: dict) -> float:
    """The most a request of the step cost (tokens of every request are alike within a few)."""
    return (step["input_tokens"] + step["output_tokens"]) * PRICE / 1e6 / step["requests"] * 1.5


def test_a_run_stops_at_its_budget_and_resumes_with_a_budget_of_its_own(tmp_path):
    priced_fake()
    chain = Chain(name="c", steps=[label_step()])
    out = tmp_path / "o"
    budget = 0.02
    with pytest.raises(RunInterrupted) as excinfo:
        chain.run(rows(200), output_dir=out, cache=False, max_cost=budget)
    assert excinfo.value.exit_code == EXIT_BUDGET_REACHED
    recorded = json.loads((out / "run.json").read_text())
    step = recorded["steps"]["label"]
    assert recorded["status"] == "budget_reached"
    assert 10 < step["ok"] < 200, "the run stopped before the end and kept what it answered"
    assert budget <= step["cost_usd"] <= budget + SLOTS * request_cost(step), "never more than the budget and the requests in flight"
    assert step["cost_usd"] == round((step["input_tokens"] + step["output_tokens"]) * PRICE / 1e6, 6)
    message = str(excinfo.value)
    assert f"Budget reached (${step['cost_usd']:.4f} spent by this session of its $0.0200 budget, --max-cost;" in message
    assert "requests in flight were finished" in message and "Run the same command again" in message
    assert recorded["budget"] == {"max_cost_usd": budget, "spent_usd": pytest.approx(step["cost_usd"], abs=1e-6)}
    shown = " ".join(rendered(recorded).split())
    assert f"Budget: ${step['cost_usd']:.4f} of $0.0200 spent by this session (--max-cost): reached, the run stopped." in shown

    first = step["ok"]
    with pytest.raises(RunInterrupted):
        chain.run(rows(200), output_dir=out, cache=False, max_cost=budget)
    again = json.loads((out / "run.json").read_text())
    second = again["sessions"][1]["nodes"]["label"]
    assert again["steps"]["label"]["ok"] > first, "the resumed run went on with the rows not answered"
    assert second["requests"] == again["steps"]["label"]["ok"] - first, "no row was asked twice"
    session_cost = (second["input_tokens"] + second["output_tokens"]) * PRICE / 1e6
    assert budget <= session_cost <= budget + SLOTS * request_cost(step), "the budget counts only this session's spending"

    result = chain.run(rows(200), output_dir=out, cache=False, max_cost=100.0)
    assert len(result["label"]) == 200 and result.stats["status"] == "completed"


def test_a_budget_is_refused_for_an_engine_with_no_price(tmp_path):
    register_engine("s", backend="fake", model="m")
    with pytest.raises(ConfigError, match="Step 'label': engine 's' has no known price .* price_per_million_input"):
        Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o", max_cost=1.0)
    assert not (tmp_path / "o").exists(), "refused before the run directory is made"


@pytest.mark.parametrize("max_cost", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_a_budget_that_is_not_a_positive_amount_is_refused(tmp_path, max_cost):
    priced_fake()
    with pytest.raises(ConfigError, match="must be a positive amount of USD"):
        Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o", max_cost=max_cost)


def test_a_budget_with_a_runner_is_refused(tmp_path):
    priced_fake()
    with pytest.raises(ConfigError, match=r"cannot be kept with a runner \(--on ray\)"):
        Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o", max_cost=1.0, on="ray")


def test_a_budget_not_reached_changes_nothing(tmp_path):
    priced_fake()
    result = Chain(name="c", steps=[label_step()]).run(rows(20), output_dir=tmp_path / "o", cache=False, max_cost=100.0)
    assert len(result["label"]) == 20 and result.stats["status"] == "completed"
    assert result.stats["budget"]["spent_usd"] == pytest.approx(result.stats["cost_usd"], abs=1e-6)
    assert "Budget: $" in rendered(result.stats) and "reached" not in rendered(result.stats)
    unbudgeted = Chain(name="c", steps=[label_step()]).run(rows(5), output_dir=tmp_path / "u", cache=False)
    assert unbudgeted.stats["budget"] is None and "Budget" not in rendered(unbudgeted.stats)


def rendered(stats: dict) -> str:
    """The end-of-run summary of `stats` (run.json), as text."""
    console = Console(width=200, record=True, color_system=None)
    console.print(summary(stats, "o"))
    return console.export_text()


def test_the_cli_stops_at_the_budget_with_its_own_exit_status_and_one_paragraph(tmp_path):
    engines = tmp_path / "engines.yaml"
    engines.write_text(
        "engines:\n  - name: llm\n    backend: fake\n    model: fake-model\n    max_concurrency: 1\n"
        "    price_per_million_input: 1000\n    price_per_million_output: 1000\n"
    )
    args = ("run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "-q")
    done = chainette(*args, "-e", str(engines), "--max-cost", "0.01")
    assert done.returncode == EXIT_BUDGET_REACHED, done.stderr
    assert "Budget reached (" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((tmp_path / "o" / "run.json").read_text())["status"] == "budget_reached"

    unpriced = chainette(*args, "--max-cost", "0.01")
    assert unpriced.returncode == 1
    assert "engine 'llm' has no known price (backend 'fake', model 'fake-model')" in unpriced.stderr
