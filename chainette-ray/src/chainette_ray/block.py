"""A block on a worker: chainette's own executor runs the chain over the block's input rows (with their global ids and
positions: as read, for its input stage to validate, or as the input frontier holds them) in a temporary run directory, and the block's result is what each unit committed there, for the driver to
commit into the run (chainette_ray.driver). Blocks run in long-lived workers (`BlockWorker`, one Ray actor per slot),
which hold the chain, load its backends once and keep its engines (clients, gates, servers) and its response cache from
one block to the next, until the driver closes them. Once its engines are kept, a worker runs its next block beside the
one before, sharing them (the engine's limits hold across both), so that the engines stay busy while a block's last
requests are answered. The worker's response cache is on as configured, so that a block run again after a failure is
answered mostly from it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from chainette import graph
from chainette.engines import EngineConfig, EngineOptions
from chainette.events import EventBus
from chainette.execution.executor import Executor
from chainette.execution.lasting import Lasting
from chainette.execution.recovery import Counts, NodeState
from chainette.inputs import Columns, RawRow
from chainette.nodes import INPUT_ID, Node
from chainette.plugins import get_plugins
from chainette.run.appends import read_lines
from chainette.run.options import RunOptions
from chainette.run.rundir import FLATTENED, RunDir
from chainette_ray import scratch
from chainette_ray.units import INPUT_UNIT, UnitPlan, plan_units


@dataclass(frozen=True)
class RawBlock:
    """A block's input rows as read (chainette.inputs.RawRow, sent lighter): each one's place, value and problem, its
    position in the input, and the columns and media folder of the source they all come from."""

    rows: list[tuple[str, Any, str | None]]
    positions: list[int]
    columns: Columns | None
    folder: Path | None

    @classmethod
    def of(cls, rows: list[tuple[int, RawRow]]) -> RawBlock:
        """The block of `rows` (position and row, at least one), all read from one source."""
        first = rows[0][1]
        return cls(
            [(raw.where, raw.value, raw.problem) for _, raw in rows], [position for position, _ in rows], first.columns, first.folder
        )

    def raw_rows(self) -> Iterator[RawRow]:
        for (where, value, problem), position in zip(self.rows, self.positions, strict=True):
            yield RawRow(where, value, self.columns, problem, self.folder, position)


@dataclass
class UnitResult:
    """What a block's unit committed, encoded as the driver writes it: its commit lines, the input row each commit
    decided and the ids of the rows they passed on, both in commit order, how many commits passed rows on,
    and its output lines (in the same order; none for a unit without outputs)."""

    commits: bytes = b""
    sources: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    ok: int = 0
    outputs: list[bytes] = field(default_factory=list)


@dataclass
class BlockResult:
    """What a block's run committed: each unit's result by state id, the error lines, what each node spent
    (chainette.stats.Spent, as a dict), and its rows' lines of the flattened table."""

    units: dict[str, UnitResult] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    spent: dict[str, dict[str, Any]] = field(default_factory=dict)
    flattened: list[bytes] = field(default_factory=list)
    """The flattened table's lines for the rows that made it through, in the last unit's commit order."""


class BlockWorker:
    """A slot of the cluster: runs the blocks it is given over the chain it was made with (made an async Ray actor by the
    driver, which Ray restarts after its process died, running its unfinished blocks again), then `close`. A block runs
    alone until every engine the chain uses is kept in `lasting` (the first block starts them; an engine stopped at each
    session's end, such as a lazy one taking turns on GPUs, never is): after that, blocks run side by side."""

    def __init__(self, nodes: list[Node], engines: dict[str, EngineConfig[EngineOptions]], options: RunOptions):
        self.nodes, self.engines, self.options = nodes, engines, options
        self.lasting = Lasting()
        self.used = set().union(*(graph.engines_used(node) for node in nodes))
        self.alone = asyncio.Lock()
        for config in engines.values():
            get_plugins().resolve(config.backend)  # load the backends here: nothing else in this worker may have

    async def run(self, rows: bytes | RawBlock, count: int) -> BlockResult:
        """The result of the block of `count` input rows `rows` (see `run_block`)."""
        block = partial(run_block, self.nodes, self.engines, self.options, rows, count, self.lasting)
        if not self._kept():
            async with self.alone:
                if not self._kept():
                    return await block()
        return await block()

    def _kept(self) -> bool:
        """Whether every engine the chain uses is kept, started by an earlier block."""
        return self.used <= self.lasting.engines.keys()

    async def ready(self) -> None:
        """Answers once the worker has started (the driver watches its workers start)."""

    async def close(self) -> None:
        """Stop the engines the blocks kept, close the response cache, and remove the scratch folders killed workers left."""
        await self.lasting.close(self.engines)
        scratch.sweep()


async def run_block(
    nodes: list[Node],
    engines: dict[str, EngineConfig[EngineOptions]],
    options: RunOptions,
    rows: bytes | RawBlock,
    count: int,
    lasting: Lasting,
) -> BlockResult:
    """Run `nodes` over the block's `count` input rows with the engines and cache `lasting` holds (leaving there those it
    started or opened), and return what it committed, the input's commits and failures too when `rows` are as read
    (else they are the input frontier's commit lines for them). Errors the executor raises (an engine that cannot be
    reached, a step stopped on the same error) end the block, and the run."""
    scratch.sweep()
    with scratch.folder() as folder:
        run_dir = RunDir(Path(folder) / "run", {})
        try:
            if isinstance(rows, bytes):
                NodeState(run_dir, INPUT_ID).frontier.write_bytes(rows)
                NodeState(run_dir, INPUT_ID).mark_finished(Counts(ok=count, rows_out=count))
            executor = Executor(nodes, run_dir, engines, options, EventBus(), lasting)
            executor.write_flattened(await executor.execute(rows.raw_rows() if isinstance(rows, RawBlock) else ()))
            return _collect(executor, run_dir, nodes, read=isinstance(rows, RawBlock))
        finally:
            run_dir.close()


def _collect(executor: Executor, run_dir: RunDir, nodes: list[Node], *, read: bool) -> BlockResult:
    """What the block committed, unit by unit: the input's too when it `read` the rows."""
    result = BlockResult()
    for unit in ([INPUT_UNIT] if read else []) + plan_units(executor, nodes):
        result.units[unit.state_id] = _unit_result(run_dir, unit)
    result.errors = list(read_lines(run_dir.errors))
    result.spent = {node_id: asdict(stats.session) for node_id, stats in executor.stats.items() if node_id != INPUT_ID}
    result.flattened = _lines(run_dir.node_folder(FLATTENED))
    return result


def _unit_result(run_dir: RunDir, unit: UnitPlan) -> UnitResult:
    """A unit's result, read from the block's run directory (its commits decoded here, so that the driver need not)."""
    frontier = NodeState(run_dir, unit.state_id).frontier
    result = UnitResult(frontier.read_bytes() if frontier.exists() else b"")
    for line in result.commits.splitlines():
        record = orjson.loads(line)
        result.sources.append(record["source"])
        result.passed += [row["row_id"] for row in record["rows"]]
        result.ok += bool(record["rows"])
    if unit.yield_output:
        result.outputs = _lines(run_dir.node_folder(unit.state_id))
    return result


def _lines(folder: Path) -> list[bytes]:
    """The lines of an output folder's files, in order."""
    return [line for path in sorted(folder.glob("*.jsonl")) for line in path.read_bytes().splitlines(keepends=True)]
