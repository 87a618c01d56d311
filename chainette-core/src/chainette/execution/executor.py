"""The executor of one session of a run: every node works at once, each taking its rows from the frontier of the
node before as they are committed (chainette.execution.feed), and a parallel group hands its rows to its branches
and joins them back row by row (chainette.execution.group). Nodes run in segments (chainette.execution.segments):
a segment starts once the one before has finished, when its engines need the devices of an engine before them.

Each node commits one `frontier.Commit` per input row it passes or filters out, and a row that fails goes
to the errors file. A node's frontier and the errors file are its commit log: a resumed node skips every
row already committed there (see chainette.run.appends for the write order that keeps outputs and commits
consistent after a crash, and chainette.execution.feed for why a node's commits follow those of the node before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import groupby, pairwise
from operator import itemgetter
from pathlib import Path
import time
from typing import Any

from pydantic import BaseModel

from chainette import graph, inputs
from chainette.cache import ResponseCache, open_cache, uses_cache
from chainette.engines import EngineConfig, EngineOptions, engine_price
from chainette.events import EventBus, NodeCounted, NodeFinished, NodeStarted, Notice
from chainette.execution.answering import RowAnswerer
from chainette.execution.apply import ApplyStage
from chainette.execution.batching import BatchStage, batch_engines
from chainette.execution.context import carried_to_end, kept_entries, own_entries
from chainette.execution.engine_pool import EnginePool
from chainette.execution.feed import Feed, Queue, Reader, Source
from chainette.execution.files import ErrorLog, NodeFiles
from chainette.execution.flatten import Source as FlattenSource
from chainette.execution.flatten import write_flattened
from chainette.execution.garbage import session_pace
from chainette.execution.group import Group
from chainette.execution.ingest import ingest
from chainette.execution.lasting import Lasting
from chainette.execution.recovery import Counts, NodeState, Reopened, forget_filtered, forget_finished, recover_errors
from chainette.execution.step import StepStage
from chainette.execution.stopping import StopSignal, first_failure_cancels
from chainette.frontier import rows
from chainette.nodes import INPUT_ID, Apply, Node, Parallel, Step
from chainette.run.appends import Writer
from chainette.run.options import RunOptions
from chainette.run.rundir import RunDir
from chainette.stats import NodeStats, SessionLog, run_figures


class Everything:
    """The input rows of a node an earlier session finished: all of them."""

    def __contains__(self, row_id: object) -> bool:
        return True


@dataclass
class Unit:
    """A node or a parallel group as this session runs it: the feed the next node reads, the input rows earlier
    sessions decided, and its files and its work over a source of rows (None when an earlier session finished it)."""

    id: str
    feed: Feed
    decided: Container[str]
    files: NodeFiles | None = None
    work: Callable[[Source], Awaitable[None]] | None = None


SAVE_EVERY = 1.0


class Executor:
    """Executes a chain's nodes into a run directory for one session (a first run or a resumption); `lasting`: the
    engines and response cache its owner keeps from one session to the next (chainette.execution.lasting)."""

    errors: ErrorLog  # opened by `execute`, once the errors file is repaired

    def __init__(
        self,
        nodes: list[Node],
        run_dir: RunDir,
        engines: dict[str, EngineConfig[EngineOptions]],
        options: RunOptions,
        bus: EventBus | None = None,
        lasting: Lasting | None = None,
    ):
        self.nodes = nodes
        self.run_dir = run_dir
        self.options = options
        self.limit = options.limit
        self.limited = False  # whether `limit` leaves input rows out: then no node is finished
        self.bus = bus or EventBus()
        self.control = StopSignal(self._requests_in_flight)
        self.writer = Writer(durable=options.durable)
        self.input_model = graph.input_model(nodes)
        self.models: dict[str, type[BaseModel] | None] = {INPUT_ID: self.input_model}
        self.models.update({n.id: n.output_model for n in graph.iter_nodes(nodes)})
        self.sessions = SessionLog(run_dir.sessions, resumed=run_dir.resumed)
        self.stats = {INPUT_ID: NodeStats("input")}
        self.stats.update({n.id: NodeStats("step" if isinstance(n, Step) else "apply") for n in graph.iter_nodes(nodes)})
        self.running: dict[str, float] = {}
        self.groups = {id(group): f"group{index}" for index, group in enumerate(graph.parallels(nodes))}
        self.kept = kept_entries(nodes)
        engines = batch_engines(engines, [n.engine_name for n in graph.iter_nodes(nodes) if isinstance(n, Step)], forced=options.batch)
        self.pool = EnginePool(
            engines, [graph.engines_used(n) for n in nodes], run_dir.root, self.control, self.bus, lasting.engines if lasting else None
        )
        self.prices = {n.id: engine_price(engines[n.engine_name]) for n in graph.iter_nodes(nodes) if isinstance(n, Step)}
        self.asking = [
            self.stats[n.id] for n in graph.iter_nodes(nodes) if isinstance(n, Step) and not engines[n.engine_name].options.batch
        ]
        self.failed_rows: set[int] = set()
        self.cache_wanted = any(
            uses_cache(options.cache, engines[n.engine_name], n) for n in graph.iter_nodes(nodes) if isinstance(n, Step)
        )
        self.response_cache: ResponseCache | None = None
        self.lasting = lasting

    async def execute(self, raw_rows: Iterable[inputs.RawRow]) -> Path:
        """Run every node over `raw_rows`; return the final frontier (the rows that made it through)."""
        self._recover()
        if self.cache_wanted:
            self.response_cache = self._open_cache()
        saver = asyncio.ensure_future(self._save_sessions())
        try:
            with session_pace():
                return (await self._run_segments(raw_rows)).path
        finally:
            saver.cancel()
            try:
                await self.pool.stop_all()
            finally:
                self.writer.flush()
                self.errors.close()
                if self.response_cache is not None:
                    self._release_cache(self.response_cache)

    def _release_cache(self, cache: ResponseCache) -> None:
        """Close the response cache at the session's end; one the owner keeps is only flushed."""
        if self.lasting is None:
            cache.close()
        else:
            cache.flush()

    def _open_cache(self) -> ResponseCache | None:
        """The response cache (the owner's, when it keeps one); None when it cannot be used."""
        opening = partial(open_cache, self.options.cache_dir, lambda message: self.bus.emit(Notice(message)))
        return opening() if self.lasting is None else self.lasting.response_cache(opening)

    async def _run_segments(self, raw_rows: Iterable[inputs.RawRow]) -> Feed:
        """Read the input and run the nodes, segment after segment, each with its engines; return the last node's feed.
        The input is read while the first segment works (before it, with `id_column`: the ids are checked unique over
        the whole input before any request)."""
        upstream, reading = self._open_input(raw_rows)
        if reading is not None and self.options.id_column:
            await reading()
            reading = None
        await self.pool.start_persistent()
        segments = self.pool.segments
        for number, segment in enumerate(segments):
            await self.pool.before(segment)
            work = [reading()] if reading is not None else []
            reading = None
            for position in segment:
                unit = self._open(self.nodes[position])
                if unit.work is not None:
                    work.append(unit.work(self._reader(upstream, unit)))
                upstream = unit.feed
            await first_failure_cancels(work)
            self.control.check()
            await self.pool.after(next((later for later in segments[number + 1 :] if any(self.pool.plan[p] for p in later)), []))
        if reading is not None:  # a chain of no nodes
            await reading()
        return upstream

    def _recover(self) -> None:
        """Read back what earlier sessions spent and failed (with retry_errors, forget every failure but the
        input's, and the rows groups filtered out for want of a branch's result), then open the errors file: after
        its repair, which may replace it."""
        for node_id, stats in self.stats.items():
            stats.earlier = self.sessions.earlier_spent(node_id)
        if self.options.retry_errors:
            forget_finished(self.run_dir, keep=INPUT_ID)
            for group in graph.parallels(self.nodes):
                forget_filtered(self._joined(group))
        path = self.run_dir.errors
        failed, self.failed_rows = recover_errors(path, keep_node=INPUT_ID if self.options.retry_errors else None)
        self.errors = ErrorLog(self.writer, path, self.bus, failed, self.failed_rows)

    async def _save_sessions(self) -> None:
        """Save this session's spending about once a second, so that a killed session's figures survive it."""
        while True:
            await asyncio.sleep(SAVE_EVERY)
            self._tally_seconds()
            self.sessions.save(self.stats)

    def _tally_seconds(self) -> None:
        """Move the time running nodes have spent so far into their session figures."""
        now = time.perf_counter()
        for node_id, since in self.running.items():
            self.stats[node_id].session.seconds += now - since
            self.running[node_id] = now

    def save_session(self, status: str) -> list[dict[str, Any]]:
        """Save this session as ended with `status`; return every session's record."""
        self._tally_seconds()
        return self.sessions.save(self.stats, status)

    def _requests_in_flight(self) -> int:
        """The requests the steps sent and have no answer to yet (a batch step's lines, which outlive the run, are not)."""
        return sum(stats.in_flight for stats in self.asking)

    def summary(self) -> dict[str, Any]:
        """The figures of run.json (see `stats.run_figures`)."""
        return run_figures(self.stats, self.prices, len(self.failed_rows))

    def _reopen(self, node_id: str, yield_output: bool) -> Reopened | None:
        """Start the node: None when an earlier session finished it, else its files reopened. Its counts are restored."""
        state = NodeState(self.run_dir, node_id)
        finished = state.finished_counts()
        reopened = None if finished else state.reopen(self.writer, yield_output, self.errors, self.control)
        counts = finished or (reopened.counts if reopened else Counts())
        stats = self.stats[node_id]
        stats.ok, stats.failed, stats.filtered, stats.rows_out = counts.ok, counts.failed, counts.filtered, counts.rows_out
        self.running[node_id] = time.perf_counter()
        total = stats.rows_in if finished else None
        self.bus.emit(NodeStarted(node=node_id, kind=stats.kind, total=total, done=stats.rows_in))
        return reopened

    def _finish(self, node_id: str, files: NodeFiles | None, *, ended: bool = True) -> None:
        """Close the node's files, record its time, and mark it done unless it did not end (`ended`: it failed, or a
        failure beside it cancelled it), the run is stopping or `limit` left input rows unread (the node then has more
        rows to come)."""
        if files is not None:
            files.close(ended=ended)
        if self.response_cache is not None:
            self.response_cache.flush()
        self._tally_seconds()
        del self.running[node_id]
        stats = self.stats[node_id]
        complete = ended and not self.control.stopping
        self.bus.emit(NodeFinished(node=node_id, stats=stats.snapshot(self.prices.get(node_id)), complete=complete))
        if files is not None and complete and not self.limited:
            NodeState(self.run_dir, node_id).mark_finished(Counts(stats.ok, stats.failed, stats.filtered, stats.rows_out))

    def _open_input(self, raw_rows: Iterable[inputs.RawRow]) -> tuple[Feed, Callable[[], Awaitable[None]] | None]:
        """The input frontier's feed, and the work of reading the input rows into it (the first `limit` of them; None
        when an earlier session read them all). Whether the limit leaves rows out is known from the input once it is
        read, else from its count when an earlier session finished it."""
        reopened = self._reopen(INPUT_ID, False)
        stats = self.stats[INPUT_ID]
        if reopened is None:
            self.limited = self.limit is not None and stats.rows_in > self.limit
            return self._finished_feed(INPUT_ID), None
        files = reopened.files

        async def read() -> None:
            with self._finishing(INPUT_ID, files):
                self.limited = await ingest(raw_rows, self.input_model, reopened.decided, files, stats, self.options.id_column, self.limit)
            if not self.control.stopping:
                self._counted(INPUT_ID, stats.rows_in)

        return files.feed, read

    def _finished_feed(self, node_id: str) -> Feed:
        return Feed(NodeState(self.run_dir, node_id).frontier, None, self.control)

    def _open(self, node: Node) -> Unit:
        """Open a node or group for this session."""
        if isinstance(node, Parallel):
            return self._open_group(node)
        reopened = self._reopen(node.id, node.yield_output)
        if reopened is None:
            self._finish(node.id, None)
            return Unit(node.id, self._finished_feed(node.id), Everything())
        files = reopened.files
        return Unit(node.id, files.feed, reopened.decided, files, partial(self._run_node, node, files))

    async def _run_node(self, node: Step | Apply, files: NodeFiles, source: Source) -> None:
        tools = (files, self.stats[node.id], self.control, self.kept[id(node)])
        with self._finishing(node.id, files):
            if isinstance(node, Step):
                await self._step_stage(node, tools, source).process(source)
            else:
                await ApplyStage(*tools, node=node, models=self.models).process(source)

    @contextmanager
    def _finishing(self, node_id: str, files: NodeFiles) -> Iterator[None]:
        """Finish the node once its work ends, however it ends: a failure, or a cancellation by one beside it, finishes
        it as not complete (its NodeFinished still comes, with its time) and goes on."""
        try:
            yield
        except BaseException:
            self._finish(node_id, files, ended=False)
            raise
        self._finish(node_id, files)

    def _step_stage(
        self, step: Step, tools: tuple[NodeFiles, NodeStats, StopSignal, frozenset[str]], source: Source
    ) -> StepStage | BatchStage:
        """The stage answering `step`, both kinds with its row answerer: through batch jobs when its engine answers that
        way (its rows read again from `source` when their answers come), else a request per row."""
        files, stats, control, kept = tools
        engine = self.pool.get(step.engine_name)
        answerer = RowAnswerer(step, engine.config, files, stats, kept, self.response_cache, self.options.cache)
        if engine.batches is None:
            return StepStage(answerer, engine)
        return BatchStage(
            answerer,
            engine.batches,
            control,
            folder=self.run_dir.batch_folder(step.id),
            bus=self.bus,
            cancel_on_stop=self.options.cancel_batches,
            reread=source.again,
        )

    def _open_group(self, group: Parallel) -> Unit:
        """Open a group: its frontier, and each branch's nodes with its ledger (recounted after a crash). A group with a
        batch step lets in every row at once, since that step takes all its rows before it answers any."""
        state_id = self._state_id(group)
        if NodeState(self.run_dir, state_id).finished_counts() is not None:
            return Unit(state_id, self._finished_feed(state_id), Everything())
        reopened = NodeState(self.run_dir, state_id).reopen(self.writer, False, self.errors, self.control)
        files = reopened.files
        batches = any(isinstance(n, Step) and self.pool.configs[n.engine_name].options.batch for n in graph.iter_nodes([group]))
        running = Group(files, self.writer, self.control, self.kept[id(group)], bounded=not batches)
        work = [part for branch in group.branches for part in self._open_branch(running, branch.steps, branch.alias, reopened.decided)]

        async def run(source: Source) -> None:
            if self.options.retry_errors:
                running.retry(row for row in source.again() if row.row_id in reopened.decided)
            await first_failure_cancels([running.dispatch(source), *(part() for part in work)])
            joined = running.settle()
            files.close()
            if joined and not self.control.stopping and not self.limited:
                NodeState(self.run_dir, state_id).mark_finished(Counts())

        return Unit(state_id, files.feed, reopened.decided, files, run)

    def _open_branch(
        self, group: Group, nodes: list[Node], alias: str | None, joined: Container[str]
    ) -> list[Callable[[], Awaitable[None]]]:
        """Open a branch's nodes, each telling the branch's ledger what it decides; return their work, the first
        node reading the group's queue and each other the frontier of the one before."""
        units = [self._open(node) for node in nodes]
        first = self.stats.get(units[0].id)
        counted = partial(self._counted, units[0].id) if first is not None else None
        queue = Queue(self.control, counted, first.rows_in if first is not None else 0)
        ledger = group.branch(alias, units[0].decided, queue)
        for position, unit in enumerate(units):
            if unit.files is not None:
                unit.files.decided = partial(ledger.decided, position == len(units) - 1)
        pending = (row for before, unit in pairwise(units) for row in rows(before.feed.path) if row.row_id not in unit.decided)
        finals = (row for row in rows(units[-1].feed.path) if (row.origin or row.row_id) not in joined)
        ledger.recount(pending, finals)
        sources: list[Source] = [queue]
        sources += [self._reader(before.feed, unit) for before, unit in pairwise(units)]
        return [partial(unit.work, source) for unit, source in zip(units, sources, strict=True) if unit.work is not None]

    def _reader(self, upstream: Feed, unit: Unit) -> Reader:
        """How `unit` reads the rows `upstream` passes on."""
        counted = partial(self._counted, unit.id) if unit.id in self.stats else None
        return Reader(upstream, self.control, unit.decided, limit=self.limit, out=unit.feed, counted=counted)

    def _counted(self, node_id: str, total: int) -> None:
        self.bus.emit(NodeCounted(node=node_id, total=total))

    def _state_id(self, group: Parallel) -> str:
        """The name a group's frontier and done marker have in the state folder (a dot: no node id has one)."""
        return f"{self.groups[id(group)]}.joined"

    def _joined(self, group: Parallel) -> Path:
        return NodeState(self.run_dir, self._state_id(group)).frontier

    def write_flattened(self, final: Path) -> None:
        """Write the run's flattened table for the rows of the `final` frontier (chainette.execution.flatten)."""
        write_flattened(self.run_dir, final, self.flattened_sources(final))

    def flattened_sources(self, final: Path) -> list[FlattenSource]:
        """Where the flattened table finds each entry, in column order: the `final` frontier for the entries its
        rows carry, else the frontier that added it (the input's, a top-level node's, a joined group's)."""
        added: list[tuple[Path, tuple[str, ...]]] = [(NodeState(self.run_dir, INPUT_ID).frontier, (INPUT_ID,))]
        for node in self.nodes:
            if isinstance(node, Parallel):
                added.append((self._joined(node), own_entries(node)))
            elif node.yield_output:
                added.append((NodeState(self.run_dir, node.id).frontier, own_entries(node)))
        carried = carried_to_end(self.nodes, self.kept)
        located = ((final if key in carried else frontier, key) for frontier, entries in added for key in entries)
        return [FlattenSource(frontier, tuple(key for _, key in keys)) for frontier, keys in groupby(located, key=itemgetter(0))]
