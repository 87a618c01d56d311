"""`chainette plan`: what a run of a chain over an input would ask and cost, before it runs. A sample of the input's
rows runs for real (answered from the response cache where it can, so a second plan costs nothing) into a temporary
folder, in a few sessions; their figures, projected over every input row (chainette.plan.projection), less the rows
the cache would answer (chainette.plan.cached), give per step requests, tokens, cost and time, each with a 90 %
interval. Batch engines are asked online for the sample, and priced at their batch price."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
import json
import math
from pathlib import Path
import tempfile
from typing import TYPE_CHECKING, Any

from chainette import graph, inputs
from chainette.cache import CacheSetting, open_cache
from chainette.client import Usage
from chainette.engines import EngineConfig, EngineOptions, engine_price
from chainette.errors import RunInterrupted
from chainette.execution.batching import batch_engines
from chainette.nodes import Step
from chainette.plan.cached import Hits, cache_hits, first_steps
from chainette.plan.projection import ZERO, Range, project
from chainette.plan.sample import Sample, sample_rows
from chainette.pricing import cost
from chainette.run.options import RunOptions
from chainette.run.rundir import RUN_FILE
from chainette.run.session import RunSession

if TYPE_CHECKING:
    from chainette.chain import Chain

SESSIONS = 5  # the sample runs in this many sessions: the spread between them is the plan's uncertainty
KEY_CHECK_ROWS = 10_000  # inputs up to this many rows have every row's first-step cache keys looked up


@dataclass
class StepPlan:
    """One step's projection over the whole input. `cache` says how its cached rows were found: `looked up` (every
    input row's keys), `sampled` (the sample rows' keys), `as the first steps` (a later step: its prompts depend on
    earlier answers, so it is taken to hit the cache as often as the first steps do) or `off`. `cost_usd` is None when
    the engine's price is unknown; `seconds` when the sample sent it no request to time, or when it answers in batches."""

    step: str
    engine: str
    rows: Range
    cached_rows: int
    cache: str
    requests: Range
    input_tokens: Range
    output_tokens: Range
    cost_usd: Range | None
    seconds: float | None
    batch: bool


@dataclass
class Plan:
    """The whole input's projection: its rows, the sample (its size, and whether spread over the input), each step's
    plan, and their totals (`cost_usd` over the priced steps; `unpriced` names the engines with no price)."""

    chain: str
    total_rows: int
    sample_rows: int
    spread: bool
    steps: list[StepPlan]
    unpriced: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> Range | None:
        priced = [step.cost_usd for step in self.steps if step.cost_usd is not None]
        return sum(priced, ZERO) if priced else None

    @property
    def seconds(self) -> float | None:
        """The longest step's time: every step works at once, each on the rows the one before has answered."""
        timed = [step.seconds for step in self.steps if step.seconds is not None]
        return max(timed) if timed else None

    def as_json(self) -> dict[str, Any]:
        def figures(step: StepPlan) -> dict[str, Any]:
            return {
                "step": step.step,
                "engine": step.engine,
                "batch": step.batch,
                "rows": step.rows.rounded(),
                "cached_rows": step.cached_rows,
                "cache": step.cache,
                "requests": step.requests.rounded(),
                "input_tokens": step.input_tokens.rounded(),
                "output_tokens": step.output_tokens.rounded(),
                "cost_usd": None if step.cost_usd is None else step.cost_usd.rounded(6),
                "seconds": None if step.seconds is None else round(step.seconds, 1),
            }

        total = self.cost_usd
        return {
            "chain": self.chain,
            "input_rows": self.total_rows,
            "sample": {"rows": self.sample_rows, "spread": self.spread},
            "steps": [figures(step) for step in self.steps],
            "cost_usd": None if total is None else total.rounded(6),
            "unpriced_engines": self.unpriced,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
        }


def make_plan(
    chain: Chain,
    source: inputs.Inputs,
    *,
    sample: int = 20,
    columns: inputs.ColumnSpec = None,
    id_column: str | None = None,
    batch: bool = False,
    cache: CacheSetting = True,
    cache_dir: str | Path | None = None,
) -> Plan:
    """Run `sample` rows of `source` through `chain` in a temporary folder and project the whole input's figures."""
    steps = [node for node in graph.iter_nodes(chain.nodes) if isinstance(node, Step)]
    engines = batch_engines(chain.engines(), [step.engine_name for step in steps], forced=batch)
    picked = sample_rows(source, sample)
    hits, every = _first_hits(chain, source, picked, engines, cache, cache_dir, columns, id_column)
    sessions, sizes = _run_sample(chain, picked, columns, id_column, cache, cache_dir)
    first_rate = sum(found.rate for found in hits.values()) / len(hits) if hits else 0.0
    plans = []
    for step in steps:
        found = hits.get(step.id)
        rate = found.rate if found is not None else first_rate
        how = "off" if cache is not True else ("looked up" if every else "sampled") if found else "as the first steps"
        figures = [session["nodes"].get(step.id, {}) for session in sessions]
        plans.append(_step_plan(step, engines[step.engine_name], figures, sizes, picked.total, rate, how))
    unpriced = sorted({plan.engine for plan in plans if plan.cost_usd is None})
    return Plan(chain.name, picked.total, sum(sizes), picked.spread, plans, unpriced)


def _first_hits(
    chain: Chain,
    source: inputs.Inputs,
    picked: Sample,
    engines: dict[str, EngineConfig[EngineOptions]],
    setting: CacheSetting,
    cache_dir: str | Path | None,
    columns: inputs.ColumnSpec,
    id_column: str | None,
) -> tuple[dict[str, Hits], bool]:
    """The first steps' cache hits over every input row when it can be read again and has at most KEY_CHECK_ROWS rows,
    else over the sample's rows; and whether every row was looked up."""
    response_cache = open_cache(cache_dir, lambda message: None) if setting is True else None
    if response_cache is None:
        return {}, False
    picker = inputs.Columns.parse(columns)
    every = picked.total <= KEY_CHECK_ROWS and (picked.spread or len(picked.rows) == picked.total)
    rows = list(enumerate(inputs.open_rows(source, None))) if every and picked.spread else picked.rows
    picked_columns = ((position, replace(raw, columns=picker)) for position, raw in rows)
    try:
        return cache_hits(first_steps(chain.nodes), picked_columns, chain.input_model, engines, response_cache, setting, id_column), every
    finally:
        response_cache.close()


def _run_sample(
    chain: Chain,
    sample: Sample,
    columns: inputs.ColumnSpec,
    id_column: str | None,
    cache: CacheSetting,
    cache_dir: str | Path | None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Every session's record (run.json's `sessions`) of the sample's run, and how many input rows each took. The rows
    read their relative media paths from their input file's folder, as a run of the file would."""
    rows = sample.runnable(inputs.Columns.parse(columns))
    ends = sorted({math.ceil(len(rows) * (part + 1) / SESSIONS) for part in range(SESSIONS)} - {0})
    with tempfile.TemporaryDirectory(prefix="chainette-plan-") as folder:
        for end in ends:
            options = RunOptions(
                output_dir=folder,
                columns=columns,
                id_column=id_column,
                cache=cache,
                cache_dir=cache_dir,
                limit=_limit(rows, end),
            )
            try:
                asyncio.run(_run_session(chain, rows, options))
            except RunInterrupted as exc:
                raise RunInterrupted(
                    "The plan was stopped (Ctrl-C or SIGTERM) before its sample had run, and nothing of it is kept but the answers "
                    "it received, in the response cache: running the same command again does not ask them again.",
                    exc.exit_code,
                ) from None
        sessions: list[dict[str, Any]] = json.loads((Path(folder) / RUN_FILE).read_text(encoding="utf-8"))["sessions"] if ends else []
    return sessions, [end - start for start, end in zip([0, *ends], ends, strict=False)]


def _limit(rows: list[inputs.RawRow], end: int) -> int:
    """The `limit` under which a session reads the sample's first `end` rows (numbered by their positions in the input):
    one past the last one's position."""
    last = rows[end - 1].position
    assert last is not None, "a sample's rows are numbered by their positions"
    return last + 1


async def _run_session(chain: Chain, rows: list[inputs.RawRow], options: RunOptions) -> None:
    """One session of the sample's run over `rows` (read already), its batch engines asked online."""
    with RunSession(chain, [], options) as session:
        session.rows = rows
        session.engines = {name: _online(config) for name, config in session.engines.items()}
        await session.execute()


def _online(config: EngineConfig[EngineOptions]) -> EngineConfig[EngineOptions]:
    if not config.options.batch:
        return config
    return config.model_copy(update={"options": config.options.model_copy(update={"batch": False})})


def _step_plan(
    step: Step, config: EngineConfig[EngineOptions], figures: list[dict[str, Any]], sizes: list[int], total: int, hit_rate: float, how: str
) -> StepPlan:
    """One step's projection from its figures in each session of the sample (`sizes`: input rows per session)."""
    samples = (step.sampling.n if step.sampling else None) or 1
    fresh = 1.0 - hit_rate

    def each(*names: str, per_cached: int = 0) -> list[float]:
        return [sum(spent.get(name, 0) for name in names) + per_cached * spent.get("cached", 0) for spent in figures]

    requests = project(each("requests", per_cached=samples), sizes, total, fresh)
    input_tokens = project(each("input_tokens", "saved_input_tokens"), sizes, total, fresh)
    output_tokens = project(each("output_tokens", "saved_output_tokens"), sizes, total, fresh)
    rows = project(each("rows"), sizes, total)
    price = engine_price(config)
    spent = None
    if price is not None:
        kinds = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        tokens = zip(*(each(kind, f"saved_{kind}") for kind in kinds), strict=True)
        costs = [cost(price, Usage(*(int(count) for count in counts))) or 0.0 for counts in tokens]
        spent = project(costs, sizes, total, fresh)
    return StepPlan(
        step.id,
        config.name,
        rows,
        round(rows.estimate * hit_rate),
        how,
        requests,
        input_tokens,
        output_tokens,
        spent,
        None if config.options.batch else _seconds(config, figures, requests.estimate),
        config.options.batch,
    )


def _seconds(config: EngineConfig[EngineOptions], figures: list[dict[str, Any]], requests: float) -> float | None:
    """The time `requests` take on the engine: waves of max_concurrency requests, each as long as a wave took in the
    sample, or longer where the engine's rate limits say so; None when the sample sent the step no request."""
    options = config.options
    waves = sum(math.ceil(spent.get("requests", 0) / options.max_concurrency) for spent in figures)
    if not waves:
        return None
    wave_seconds = sum(spent.get("seconds", 0.0) for spent in figures if spent.get("requests")) / waves
    seconds: float = math.ceil(requests / options.max_concurrency) * wave_seconds
    if options.requests_per_minute:
        seconds = max(seconds, requests / options.requests_per_minute * 60)
    return seconds
