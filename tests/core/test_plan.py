"""`chainette plan`: a sample run for real, projected over the whole input. A sample that is the whole input projects
the real run's figures exactly; a spread sample's intervals hold the real figures; a second plan sends nothing; rows
the cache would answer are subtracted; an engine with no price has its cost "unknown", said once."""

from __future__ import annotations

import json
import os
import signal

import pytest

from chainette import Chain, register_engine
from chainette.errors import RunInterrupted
from chainette.plan import make_plan
from chainette.plan import sample as sampling
from chainette.testing import FakeServer

from .test_cli import chainette
from .test_run import echo, label_step

PRICES = {"price_per_million_input": 2.0, "price_per_million_output": 8.0}


def varied(n):
    """Rows whose prompts differ in length, so that the fake backend's token counts vary from row to row."""
    return [{"text": "word " * (1 + (i * 7) % 23)} for i in range(n)]


def fake_chain(**options):
    register_engine("s", backend="fake", model="m", **options)
    return Chain(name="c", steps=[label_step()])


def test_a_sample_of_the_whole_input_projects_the_real_figures(tmp_path):
    chain = fake_chain(**PRICES)
    rows = varied(12)
    plan = make_plan(chain, rows, sample=20)
    real = chain.run(rows, output_dir=tmp_path / "o").stats["steps"]["label"]
    step = plan.steps[0]
    assert (plan.total_rows, plan.sample_rows, plan.spread) == (12, 12, False)
    assert step.requests.estimate == step.requests.low == step.requests.high == real["requests"] == 12
    assert step.input_tokens.estimate == real["input_tokens"] and step.output_tokens.estimate == real["output_tokens"]
    assert step.cost_usd is not None and round(step.cost_usd.estimate, 6) == real["cost_usd"]
    assert plan.unpriced == []


def test_a_spread_sample_s_intervals_hold_the_real_figures(tmp_path):
    chain = fake_chain(**PRICES)
    rows = varied(200)
    plan = make_plan(chain, rows, sample=20)
    real = chain.run(rows, output_dir=tmp_path / "o", cache=False).stats["steps"]["label"]
    step = plan.steps[0]
    assert (plan.total_rows, plan.sample_rows, plan.spread) == (200, 20, True)
    assert step.requests.estimate == 200
    for figure in ("input_tokens", "output_tokens", "cost_usd"):
        projected = getattr(step, figure)
        assert projected.low < real[figure] < projected.high, figure
        assert projected.low < projected.estimate < projected.high, "a sample of part of the input is not sure"


def test_a_second_plan_sends_nothing_and_cached_rows_are_subtracted(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m", **PRICES)
    chain = Chain(name="c", steps=[label_step()])
    rows = [{"text": f"row{i}"} for i in range(50)]
    first = make_plan(chain, rows, sample=10)
    sent = len(backend.requests)
    assert sent == 10 and first.steps[0].cached_rows == 0 and first.steps[0].cache == "looked up"

    again = make_plan(chain, rows, sample=10)
    assert len(backend.requests) == sent, "the sample was answered from the cache"
    # the step's key holds the row's id (no temperature 0): the sample's rows ran with the ids the whole run gives them
    assert again.steps[0].cached_rows == 10 and again.steps[0].requests.estimate == 40

    chain.run(rows[:30], output_dir=tmp_path / "o")
    sampled = [position for position in sampling.spread_positions(50, 10) if position < 30]
    assert len(sampled) > 1 and len(backend.requests) == sent + 30 - len(sampled), "the run reused the sample's answers"
    after = make_plan(chain, rows, sample=10).steps[0]
    cached = 30 + 10 - len(sampled)  # the run's rows and the sample's after them
    assert after.cached_rows == cached, "every input row's first-step keys were looked up"
    assert after.requests.estimate == pytest.approx(50 - cached) and after.cost_usd is not None
    assert after.cost_usd.estimate < first.steps[0].cost_usd.estimate


def test_the_cli_prints_the_plan_and_says_once_that_a_cost_is_unknown(tmp_path):
    chain_file = tmp_path / "chain.py"
    chain_file.write_text(
        "from pydantic import BaseModel\nfrom chainette import Chain, Step, register_engine\n"
        "class Text(BaseModel):\n    text: str\nclass Label(BaseModel):\n    label: str\n"
        "register_engine('llm', backend='fake', model='m')\n"
        "chain = Chain(name='c', steps=[Step(id='first', input_model=Text, output_model=Label, engine_name='llm', user_prompt='{{text}}'),"
        " Step(id='again', input_model=Label, output_model=Label, engine_name='llm', user_prompt='{{label}}')])\n"
    )
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in varied(40)))
    done = chainette("plan", f"{chain_file}:chain", "-i", str(inputs), "--sample", "8")
    assert done.returncode == 0, done.stderr
    assert "c: plan for 40 input rows" in done.stdout and "Sample: 8 rows, spread over the input" in done.stdout
    assert done.stdout.count("Cost unknown for engine llm") == 1

    as_json = chainette("plan", f"{chain_file}:chain", "-i", str(inputs), "--sample", "8", "--json")
    plan = json.loads(as_json.stdout)
    assert plan["input_rows"] == 40 and plan["sample"] == {"rows": 8, "spread": True}
    assert [step["step"] for step in plan["steps"]] == ["first", "again"] and plan["unpriced_engines"] == ["llm"]
    assert plan["steps"][0]["requests"]["estimate"] == 40 and plan["cost_usd"] is None


def test_a_parquet_input_is_counted_from_its_footer_and_sampled_over_it(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet

    path = tmp_path / "in.parquet"
    pyarrow.parquet.write_table(pa.Table.from_pylist(varied(60)), path)
    read = []
    counted = sampling.inputs.open_rows
    monkeypatch.setattr(sampling.inputs, "open_rows", lambda *args: read.append(args) or counted(*args))
    plan = make_plan(fake_chain(), str(path), sample=6, cache=False)
    assert (plan.total_rows, plan.sample_rows, plan.spread) == (60, 6, True)
    assert len(read) == 1, "the rows are read once, for the sample: their count comes from the footer"


def test_batch_engines_are_asked_online_for_the_sample(tmp_path):
    pytest.importorskip("chainette_openai")
    rows = varied(8)
    with FakeServer(models=("gpt-4o-mini",)) as server:
        register_engine("s", backend="openai", model="gpt-4o-mini", endpoint=f"{server.base_url}/v1", api_key="sk-plan", **PRICES)
        chain = Chain(name="c", steps=[label_step()])
        online = make_plan(chain, rows, sample=8, cache=False).steps[0]
        batched = make_plan(chain, rows, sample=8, batch=True, cache=False).steps[0]
        assert len(server.chat_requests()) == 16, "both samples were asked online"
    assert batched.batch and not online.batch
    assert batched.input_tokens == online.input_tokens and batched.cost_usd == online.cost_usd, "explicit prices are what a batch pays too"
    assert batched.seconds is None, "a batch step's time is the provider's"


def test_a_stopped_plan_says_its_sample_is_not_kept_and_a_second_one_reuses_its_answers(scripted):
    stopped: list[bool] = []

    def answer(request, attempt):
        if len(backend.requests) == 3 and not stopped:
            stopped.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return echo(request, attempt)

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=1, **PRICES)
    chain = Chain(name="c", steps=[label_step()])
    rows = [{"text": f"row{i}"} for i in range(10)]
    with pytest.raises(RunInterrupted) as excinfo:
        make_plan(chain, rows, sample=10)
    assert excinfo.value.exit_code == 143
    assert "The plan was stopped (Ctrl-C or SIGTERM) before its sample had run" in str(excinfo.value)
    assert "Run the same command again (same chain, inputs and output directory)" not in str(excinfo.value)
    make_plan(chain, rows, sample=10)
    assert len(backend.requests) == 10, "the answers received before the stop were not asked again"
