"""How many input rows the response cache would answer at the chain's first steps (those reading the chain's input),
found without sending anything: each row's prompts rendered, its cache keys made as the run makes them, and looked up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel

from chainette import inputs
from chainette.cache import CacheSetting, ResponseCache
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import RowError
from chainette.execution.answering import RowAnswerer
from chainette.execution.ingest import identify
from chainette.frontier import Row
from chainette.nodes import INPUT_ID, Node, Parallel, Step
from chainette.stats import NodeStats

if TYPE_CHECKING:
    from chainette.execution.files import NodeFiles


@dataclass
class Hits:
    """Of `checked` valid input rows, those whose every candidate the cache holds at the step."""

    hits: int = 0
    checked: int = 0

    @property
    def rate(self) -> float:
        return self.hits / self.checked if self.checked else 0.0


def first_steps(nodes: list[Node]) -> list[Step]:
    """The steps that read the chain's input: the first node, or the first step of each branch of a first group."""
    if not nodes:
        return []
    first = nodes[0]
    if isinstance(first, Step):
        return [first]
    if isinstance(first, Parallel):
        return [branch.steps[0] for branch in first.branches if isinstance(branch.steps[0], Step)]
    return []


def cache_hits(
    steps: list[Step],
    rows: Iterable[tuple[int, inputs.RawRow]],
    model: type[BaseModel] | None,
    engines: dict[str, EngineConfig[EngineOptions]],
    cache: ResponseCache,
    setting: CacheSetting,
    id_column: str | None,
) -> dict[str, Hits]:
    """Per step of `steps`, how many of `rows` (with their positions in the input) the cache would answer."""
    answerers = {step.id: _answerer(step, engines[step.engine_name], cache, setting) for step in steps}
    found = {step.id: Hits() for step in steps}
    for position, raw in rows:
        row_id, value = identify(raw, position, id_column)
        try:
            if isinstance(value, ValueError):
                raise value
            row = Row(row_id, {INPUT_ID: inputs.validate(raw, value, model)}, INPUT_ID, index=position)
        except ValueError:
            continue
        for step_id, answerer in answerers.items():
            found[step_id].checked += 1
            found[step_id].hits += _answered(answerer, row)
    return found


def _answerer(step: Step, config: EngineConfig[EngineOptions], cache: ResponseCache, setting: CacheSetting) -> RowAnswerer:
    """The step's row answerer, only to make requests and look them up: it writes no file."""
    return RowAnswerer(step, config, cast("NodeFiles", None), NodeStats("step"), frozenset(), cache, setting)


def _answered(answerer: RowAnswerer, row: Row) -> bool:
    """Whether the cache holds every candidate of `row` (a prompt that does not render is asked for: it fails then)."""
    if answerer.cache is None:
        return False
    (asked,) = answerer.asked([row])
    return not isinstance(asked.request, RowError) and None not in answerer.cached(asked.stored)
