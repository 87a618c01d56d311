"""The driver's executor: the core's `Executor` with its nodes run on the cluster. It cuts the input rows some unit has
not decided yet into blocks as it reads them (chainette_ray.blocks), runs them on long-lived block workers (a Ray actor
per slot, chainette_ray.block), and commits each finished block into the run directory, unit by unit in the chain's
order, through the core's node files: a row a unit already decided (a block run again after a driver kill) is skipped,
so every row is committed once. The blocks validate the input rows too (the input is then a unit like the nodes, its
rows numbered by position), unless the ids come from an id column, which must be checked unique over the whole input
before any request: the driver then reads the input into its frontier first, as a local run does.

What the driver holds does not grow with the input: a pass never offers a row twice (its blocks hold each row once, and
each block's result comes once), so a unit is checked only against what it had committed when the pass began, read
from disk: nothing on a fresh run, and on a resume about a bit for each row whose id is its position
(chainette.execution.rowids, chainette_ray.positions)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
import shutil
import time
from typing import Any

import orjson
import ray
from ray.exceptions import RayError, RayTaskError

from chainette import inputs
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ChainetteError
from chainette.events import EventBus, Notice
from chainette.execution.executor import Executor
from chainette.execution.feed import Feed
from chainette.execution.files import NodeFiles
from chainette.execution.recovery import Counts, NodeState, recover_errors
from chainette.execution.rowids import Decided, RowIds, as_decided
from chainette.execution.stopping import first_failure_cancels
from chainette.frontier import Commit, Row, heads
from chainette.nodes import INPUT_ID, Node
from chainette.run.appends import OutputFolder, Writer
from chainette.run.options import RunOptions
from chainette.run.rundir import FLATTENED, RunDir
from chainette.stats import Spent
from chainette_ray.block import BlockResult, BlockWorker, UnitResult
from chainette_ray.blocks import Blocks, InputRows, Wanted, frontier_rows, pack_lines, pack_read
from chainette_ray.limits import most_blocks, shared
from chainette_ray.positions import RowPositions, passed_on
from chainette_ray.target import Target
from chainette_ray.units import INPUT_UNIT, RAW, UnitPlan, plan_units

ROUNDS = 3
"""Passes over the undecided rows: a second one only when a block re-run after a driver kill answered a row otherwise
than the committed part of it did (an answer not from the cache), which leaves the rows after it undecided."""
WAIT_SECONDS = 0.25
SHORT_WAIT_SECONDS = 0.02
CLOSE_SECONDS = 30.0
"""How long the block workers have to stop the engines they kept, once the blocks are run (a server they started stops then)."""
STARTING_SECONDS = 30.0
"""How long the block workers may take to start before the driver tells what they wait for (once a run)."""
QUEUED = 2
"""Blocks given to a worker at once: it never waits for the driver between two, and once its engines are started it
runs them side by side (chainette_ray.block), so that a block's last requests do not leave the engines idle."""


@dataclass
class OpenUnit:
    """A unit as the driver commits into it: its plan, its files (None: an earlier session finished it), and what it had
    committed when the pass began: the input rows it decided, and the rows it passed on (with their input positions)."""

    plan: UnitPlan
    files: NodeFiles | None
    decided: Decided
    passed: RowPositions


class RayExecutor(Executor):
    """Runs the chain's nodes as blocks on the Ray cluster this process is connected to (see the module docstring)."""

    def __init__(
        self,
        nodes: list[Node],
        run_dir: RunDir,
        engines: dict[str, EngineConfig[EngineOptions]],
        options: RunOptions,
        bus: EventBus | None = None,
        *,
        target: Target,
    ):
        super().__init__(nodes, run_dir, engines, options, bus)
        self.target = target
        self.engines = engines
        self.staged: OutputFolder | None = None
        self.took_in_part = False
        """Whether the pass took a block in part (a block run again after a driver kill): it may have left rows undecided."""

    async def _run_segments(self, raw_rows: Iterable[inputs.RawRow]) -> Feed:
        """Run the undecided rows' blocks and commit them, the input read meanwhile (by the blocks, or first into its
        frontier with `id_column`, or by an earlier session); return the last unit's feed."""
        units: list[OpenUnit] = []
        source: InputRows | Feed
        if self.options.id_column is None and NodeState(self.run_dir, INPUT_ID).finished_counts() is None:
            source = InputRows(raw_rows, self.limit, partial(self._counted, INPUT_ID))
            units.append(self._open_unit(INPUT_UNIT))
        else:
            source, reading = self._open_input(raw_rows)
            if reading is not None:
                await reading()
        units += [self._open_unit(plan) for plan in plan_units(self, self.nodes)]
        self.staged = self._stage_flattened(units[-1] if units else None)
        try:
            await self._decide_every_row(units, source)
        except BaseException:
            self._close(units, ended=False)
            raise
        self._close(units, ended=True)
        return self._finished_feed(units[-1].plan.state_id if units else INPUT_ID)

    async def _decide_every_row(self, units: list[OpenUnit], source: InputRows | Feed) -> None:
        """Run the blocks of the rows some unit has not decided, pass after pass, until none is left: the first pass over
        `source`, the input as read or its frontier, the next ones over the frontier. A pass that took every block
        whole decided every row it offered; after one that did not, the units' state is read back to find the rows left."""
        for number in range(ROUNDS):
            if number and not self._reload(units):
                return
            self.took_in_part = False
            await first_failure_cancels(self._pass(units, source if not number else self._finished_feed(INPUT_ID)))
            self.control.check()
            self.writer.flush()
            if isinstance(source, InputRows):
                self.limited = source.limited
            if not self.took_in_part:
                return
        if self._reload(units):
            raise ChainetteError(
                f"Some rows are still undecided after {ROUNDS} passes (their blocks answered otherwise than the part of them "
                "committed before the driver stopped). Run the same command again to go on with them."
            )

    def _pass(self, units: list[OpenUnit], source: InputRows | Feed) -> list[Awaitable[None]]:
        """The work of a pass over `source`: making its blocks of the rows it wants, and running them."""
        if isinstance(source, InputRows):
            blocks: Blocks[Any] = Blocks(source.wanted(self.control, _wanted(units, RAW)), pack_read, self.control, self.target.block_rows)
        else:
            blocks = Blocks(frontier_rows(source, self.control, _wanted(units, INPUT_ID)), pack_lines, self.control, self.target.block_rows)
        return [blocks.fill(), self._run_blocks(units, blocks)]

    def _reload(self, units: list[OpenUnit]) -> bool:
        """Read back what each open unit has committed (after the writer's flush); whether some row is left undecided."""
        failed, _ = recover_errors(self.run_dir.errors)
        for unit in units:
            if unit.files is not None:
                state_id = unit.plan.state_id
                ids = RowIds(source for _, source, _ in heads(self.run_dir.frontier(state_id)))
                ids.update(failed.get(state_id, ()))
                unit.decided = as_decided(ids)
                unit.passed = _passed(self.run_dir, state_id)
        return bool(_pending(units, _passed(self.run_dir, INPUT_ID)))

    def _open_unit(self, plan: UnitPlan) -> OpenUnit:
        """Reopen a unit's files as a local session would (its counts restored, NodeStarted sent for a node)."""
        state = NodeState(self.run_dir, plan.state_id)
        passed = _passed(self.run_dir, plan.state_id)
        if plan.is_node:
            reopened = self._reopen(plan.state_id, plan.yield_output)
        else:
            finished = state.finished_counts() is not None
            reopened = None if finished else state.reopen(self.writer, False, self.errors, self.control)
        if reopened is None:
            return OpenUnit(plan, None, frozenset(), passed)
        return OpenUnit(plan, reopened.files, reopened.decided, passed)

    def _close(self, units: list[OpenUnit], *, ended: bool) -> None:
        """Close each unit's files. When every row was decided (`ended`), finish each unit as the core does: NodeFinished,
        and its done marker unless `limit` left input rows out."""
        for unit in units:
            if unit.plan.is_node and ended:
                self._finish(unit.plan.state_id, unit.files)
            elif unit.files is not None:
                unit.files.close(ended=ended)
                if ended and not self.limited:
                    NodeState(self.run_dir, unit.plan.state_id).mark_finished(Counts())

    async def _run_blocks(self, units: list[OpenUnit], blocks: Blocks[Any]) -> None:
        """Run the pass's `blocks` as they are made on one worker per slot (started with the first block), each given up to
        QUEUED blocks at once, committing each block as it ends."""
        slots = most_blocks(self.engines, self.target.in_flight or self._cluster_slots())
        workers: list[Any] = []
        watch: asyncio.Task[None] | None = None
        queued = dict.fromkeys(range(slots), 0)
        running: dict[ray.ObjectRef[BlockResult], tuple[int, int]] = {}
        try:
            while True:
                while queued[slot := min(queued, key=queued.__getitem__)] < QUEUED and (block := blocks.take()) is not None:
                    if not workers:
                        workers = self._start_workers(slots)
                        watch = asyncio.create_task(self._watch_start([worker.ready.remote() for worker in workers]))
                    running[workers[slot].run.remote(*block)] = (slot, block[1])
                    queued[slot] += 1
                if not running:
                    if blocks.finished and not blocks.ready:
                        return
                    await blocks.changed()
                    continue
                for ref in await self._ready(list(running), patient=blocks.finished or min(queued.values()) == QUEUED):
                    slot, count = running.pop(ref)
                    queued[slot] -= 1
                    self._commit(units, self._result(ref, count))
                    self.writer.flush()
        finally:
            if watch is not None:
                watch.cancel()
            _end(workers, graceful=not running)

    async def _watch_start(self, started: list[ray.ObjectRef[None]]) -> None:
        """Tell the user (a Notice), when some block workers have not `started` (each one's `ready`, asked before its
        blocks) after STARTING_SECONDS, what they wait for: the CPUs each needs and those the cluster has free (a run
        waits for its workers without a word otherwise)."""
        waiting = started
        deadline = time.monotonic() + STARTING_SECONDS
        while waiting and time.monotonic() < deadline:
            _, waiting = await asyncio.to_thread(ray.wait, waiting, num_returns=len(waiting), timeout=WAIT_SECONDS)
        if waiting:
            free = float(ray.available_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
            total = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
            self.bus.emit(
                Notice(
                    f"--on {self.target.text}: {len(waiting)} of {len(started)} block workers have not started after "
                    f"{STARTING_SECONDS:.0f} s. Each needs {self.target.cpus_per_block:g} CPU, and the cluster has {free:g} of its "
                    f"{total:g} CPUs free (other actors or tasks hold the rest). The run goes on as they start; to start them, free "
                    "CPUs, or lower cpus_per_block or in_flight."
                )
            )

    def _start_workers(self, slots: int) -> list[Any]:
        """One block worker (a Ray actor, restarted after its process died) per slot, each with its share of the engines'
        limits. The chain goes with each actor's creation, not through the object store: Ray keeps an actor's own
        arguments for its restarts."""
        worker = ray.remote(BlockWorker).options(
            num_cpus=self.target.cpus_per_block,
            max_restarts=self.target.max_retries,
            max_task_retries=self.target.max_retries,
            max_concurrency=QUEUED,
        )
        engines, options = shared(self.engines, slots), _block_options(self.options)
        return [worker.remote(self.nodes, engines, options) for _ in range(slots)]

    def _cluster_slots(self) -> int:
        """How many blocks the cluster's CPUs run at once."""
        cpus = float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        return max(1, int(cpus / self.target.cpus_per_block))

    async def _ready(self, refs: list[ray.ObjectRef[BlockResult]], *, patient: bool) -> list[ray.ObjectRef[BlockResult]]:
        """The blocks among `refs` that ended: once one has, or (not `patient`: a block may be made meanwhile for a worker
        with room) after at most SHORT_WAIT_SECONDS, maybe none. RunInterrupted when the run is stopped meanwhile."""
        while True:
            self.control.check()
            wait = WAIT_SECONDS if patient else SHORT_WAIT_SECONDS
            ready, _ = await asyncio.to_thread(ray.wait, refs, num_returns=1, timeout=wait)
            if ready or not patient:
                return ready

    def _result(self, ref: ray.ObjectRef[BlockResult], count: int) -> BlockResult:
        """The block's result; the error that ended it as a ChainetteError (the executor's own when it raised one)."""
        try:
            result: BlockResult = ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, ChainetteError):
                raise cause from None
            raise ChainetteError(f"A block of {count} rows failed on the cluster: {type(cause).__name__}: {cause}") from None
        except RayError as exc:
            raise ChainetteError(
                f"A block of {count} rows could not be run on the cluster after {self.target.max_retries} retries ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Run the same command again to resume: the blocks committed are kept."
            ) from None
        return result

    def _commit(self, units: list[OpenUnit], result: BlockResult) -> None:
        """Commit a block's result unit by unit: each row its unit has not decided and its upstream passed on (before the
        pass, or from this block); and stage its flattened lines while every unit takes every block whole. A block of
        the input frontier's rows has no result for the input: they all passed it."""
        upstream_passed: dict[str, Container[str] | None] = {RAW: None, INPUT_ID: None}
        failures: dict[str, list[dict[str, Any]]] = {}
        for line in result.errors:
            failures.setdefault(line["step_id"], []).append(line)
        whole = True
        for unit in units:
            answered = result.units.get(unit.plan.state_id)
            if answered is None:
                continue
            passed = upstream_passed.get(unit.plan.upstream)
            committed: set[str] = set()
            if unit.files is not None:
                took_whole, committed = self._commit_unit(unit, result, answered, failures.get(unit.plan.state_id, []), passed)
                whole = whole and took_whole
            upstream_passed[unit.plan.state_id] = _Either(committed, unit.passed) if unit.passed else committed
        self.took_in_part = self.took_in_part or not whole
        if self.staged is not None and whole:
            self.staged.write_lines(result.flattened)
        elif self.staged is not None:
            self._unstage()

    def _stage_flattened(self, last: OpenUnit | None) -> OutputFolder | None:
        """Where the flattened lines of the blocks gather when the last unit starts this session with nothing committed
        (None otherwise: the table is made at the end from the frontiers, as locally)."""
        shutil.rmtree(self.run_dir.staged_flattened(), ignore_errors=True)
        if last is None or last.files is None or last.decided:
            return None
        return OutputFolder(Writer(), self.run_dir.staged_flattened())

    def _unstage(self) -> None:
        """Give up the staged flattened lines (the last unit took a block in part: its rows are flattened at the end)."""
        if self.staged is not None:
            self.staged.close()
            self.staged = None
        shutil.rmtree(self.run_dir.staged_flattened(), ignore_errors=True)

    def write_flattened(self, final: Path) -> None:
        """The flattened table: the lines the blocks made, when the last unit started this session empty and every unit
        took every block whole (in commit order: the last unit's frontier's); else made from the frontiers, as locally."""
        if self.staged is None:
            super().write_flattened(final)
            return
        self.staged.close()
        folder = self.run_dir.node_folder(FLATTENED)
        shutil.rmtree(folder, ignore_errors=True)
        if self.run_dir.staged_flattened().exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            self.run_dir.staged_flattened().rename(folder)

    def _commit_unit(
        self, unit: OpenUnit, result: BlockResult, answered: UnitResult, failures: list[dict[str, Any]], upstream: Container[str] | None
    ) -> tuple[bool, set[str]]:
        """Commit what the block's unit decided (`answered`: rows passed on or filtered out, then `failures`), and add
        what it spent; whether it took every row the block's unit decided, and the ids of the rows it passed on."""
        new = partial(_is_new, unit.decided, upstream)
        stats = self.stats.get(unit.plan.state_id)
        whole = _all_new(unit.decided, upstream, answered.sources)
        if whole:
            committed = self._commit_block(unit, answered)
            decided = len(answered.sources)
        else:
            decided, committed = self._commit_each(unit, answered, new)
        failed = [line for line in failures if new(line["row_id"])]
        for line in failed:
            row = Row(line["row_id"], {}, INPUT_ID, index=line["row_index"])
            self.errors.record(row, line["step_id"], line["error_type"], line["message"], line["raw"])
        if stats is not None:
            stats.failed += len(failed)
            spent = result.spent.get(unit.plan.state_id, {})
            stats.session = stats.session + Spent(**{**spent, "rows": decided + len(failed), "seconds": 0.0})
        return whole, committed

    def _commit_block(self, unit: OpenUnit, answered: UnitResult) -> set[str]:
        """Commit every row the block's unit decided, as the block encoded them: its output lines, then its commit lines;
        the ids of the rows it passed on."""
        assert unit.files is not None, "a unit an earlier session finished commits nothing"
        if unit.files.outputs is not None:
            unit.files.outputs.write_lines(answered.outputs)
        unit.files.commit_lines(answered.commits, len(answered.passed))
        self._count(unit, len(answered.passed), answered.ok, len(answered.sources) - answered.ok)
        return set(answered.passed)

    def _commit_each(self, unit: OpenUnit, answered: UnitResult, new: Callable[[str], bool]) -> tuple[int, set[str]]:
        """Commit, one by one, the rows of the block's unit that are `new` (a block run again after a driver kill holds
        rows committed already): each one's output lines, then its commit. How many it committed, and the ids of the
        rows they passed on."""
        assert unit.files is not None, "a unit an earlier session finished commits nothing"
        outputs = {orjson.loads(line)["row_id"]: line for line in answered.outputs}
        decided = [(commit, line) for line in answered.commits.splitlines(keepends=True) if new((commit := Commit.decode(line)).source)]
        committed: set[str] = set()
        for commit, line in decided:
            if unit.files.outputs is not None:
                for child in commit.rows:
                    unit.files.outputs.write_line(outputs[child.row_id])
            unit.files.commit(Row(commit.source, {}, INPUT_ID), commit.rows, cached=commit.cached, line=line)
            committed.update(child.row_id for child in commit.rows)
            self._count(unit, len(commit.rows), bool(commit.rows), not commit.rows)
        return len(decided), committed

    def _count(self, unit: OpenUnit, rows_out: int, ok: int, filtered: int) -> None:
        """Add committed rows to a node's figures (a group's join has none)."""
        stats = self.stats.get(unit.plan.state_id)
        if stats is not None:
            stats.rows_out += rows_out
            stats.ok += ok
            stats.filtered += filtered


def _end(workers: list[Any], *, graceful: bool) -> None:
    """End the block workers; `graceful` (no block running), once each has stopped the engines it kept (for at most
    CLOSE_SECONDS: a worker's close waits behind the blocks it was given)."""
    if graceful and workers:
        ray.wait([worker.close.remote() for worker in workers], num_returns=len(workers), timeout=CLOSE_SECONDS)
    for worker in workers:
        ray.kill(worker)


def _is_new(decided: Decided, upstream: Container[str] | None, row_id: str) -> bool:
    """Whether the driver should commit the block's decision on `row_id`: the unit has not decided it, and the unit
    before passed it on (a row a block answered otherwise than the committed part of it is left for the next pass)."""
    return row_id not in decided and (upstream is None or row_id in upstream)


def _all_new(decided: Decided, upstream: Container[str] | None, row_ids: list[str]) -> bool:
    """Whether every one of `row_ids` is new (see `_is_new`): the common case, a block run once."""
    return decided.isdisjoint(row_ids) and (upstream is None or all(map(upstream.__contains__, row_ids)))


def _block_options(options: RunOptions) -> RunOptions:
    """The run's options as a block runs with them: its own rows, nothing to resume or retry, and no fsync (what lasts
    is the driver's commit, written with the run's own `durable`)."""
    return replace(options, reporter=None, output_dir=None, on=None, overwrite=False, retry_errors=False, limit=None, durable=False)


@dataclass(frozen=True)
class _Either:
    """The ids of the rows a unit passed on: in this block (`block`), or before the pass (`before`)."""

    block: set[str]
    before: RowPositions

    def __contains__(self, row_id: object) -> bool:
        return row_id in self.block or row_id in self.before


def _passed(run_dir: RunDir, state_id: str) -> RowPositions:
    """The rows a unit's frontier passed on, with their input positions."""
    return passed_on(NodeState(run_dir, state_id).frontier)


def _pending(units: list[OpenUnit], read: RowPositions) -> RowIds:
    """The input positions (written as ids, a bit each) of the rows some unit after the input has yet to decide: rows
    its upstream passed on (`read`: the input's, unless the input is among `units`) that it did not decide."""
    passed = {INPUT_ID: read, **{unit.plan.state_id: unit.passed for unit in units}}
    pending = RowIds()
    for unit in units:
        if unit.files is not None and unit.plan.upstream != RAW:
            pending.update(str(index) for row_id, index in passed[unit.plan.upstream].items() if row_id not in unit.decided)
    return pending


def _wanted(units: list[OpenUnit], source: str) -> Wanted:
    """Whether a pass over `source` (RAW: the input as read; INPUT_ID: its frontier) wants input row (id, position) in a
    block: a unit reading `source` has yet to decide it, or a later unit a row passed on from it (as the pass begins: a
    block runs every unit of its rows). None when it wants every row: a unit reading `source` has decided none."""
    first = [unit.decided for unit in units if unit.files is not None and unit.plan.upstream == source]
    if any(not decided for decided in first):
        return None
    later = _pending(units, RowPositions())
    return lambda row_id, index: str(index) in later or any(row_id not in decided for decided in first)
