"""The executor of one session of a run: the nodes in order, each streaming rows from the previous node's
frontier on disk through its stage, with its engines started before it and stopped after the last node
that needs them.

Each node commits one `frontier.Commit` per input row it passes or filters out, and a row that fails goes
to the errors file. A node's frontier and the errors file are its commit log: a resumed node skips every
row already committed there (see chainette.run.appends for the write order that keeps outputs and commits
consistent after a crash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path
import time
from typing import Any

from pydantic import BaseModel

from chainette import graph, inputs
from chainette.cache import ResponseCache, open_cache, uses_cache
from chainette.engines import EngineConfig, EngineOptions, engine_price
from chainette.events import EventBus, NodeFinished, NodeStarted, Notice
from chainette.execution.apply import ApplyStage
from chainette.execution.batching import BatchStage, batch_engines
from chainette.execution.context import carried_to_end, kept_entries, own_entries
from chainette.execution.engine_pool import EnginePool
from chainette.execution.files import ErrorLog, NodeFiles
from chainette.execution.flatten import Source
from chainette.execution.group import join_branches, tag_rows
from chainette.execution.ingest import ingest
from chainette.execution.recovery import Counts, NodeState, Reopened, forget_finished, recover_errors
from chainette.execution.step import StepStage
from chainette.execution.stopping import StopSignal, first_failure_cancels
from chainette.frontier import Row, count_rows, rows
from chainette.nodes import INPUT_ID, Node, Parallel, Step
from chainette.run.appends import Writer
from chainette.run.options import RunOptions
from chainette.run.rundir import RunDir
from chainette.stats import NodeStats, SessionLog, run_figures

SAVE_EVERY = 1.0


class Executor:
    """Executes a chain's nodes into a run directory for one session (a first run or a resumption)."""

    errors: ErrorLog  # opened by `execute`, once the errors file is repaired

    def __init__(
        self,
        nodes: list[Node],
        run_dir: RunDir,
        engines: dict[str, EngineConfig[EngineOptions]],
        options: RunOptions,
        bus: EventBus | None = None,
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
        self.pool = EnginePool(engines, [graph.engines_used(n) for n in nodes], run_dir.root, self.control, self.bus)
        self.prices = {n.id: engine_price(engines[n.engine_name]) for n in graph.iter_nodes(nodes) if isinstance(n, Step)}
        self.asking = [
            self.stats[n.id] for n in graph.iter_nodes(nodes) if isinstance(n, Step) and not engines[n.engine_name].options.batch
        ]
        self.failed: dict[str, set[str]] = {}
        self.failed_rows: set[int] = set()
        self.cache_wanted = any(
            uses_cache(options.cache, engines[n.engine_name], n) for n in graph.iter_nodes(nodes) if isinstance(n, Step)
        )
        self.response_cache: ResponseCache | None = None

    async def execute(self, raw_rows: Iterable[inputs.RawRow]) -> Path:
        """Run every node over `raw_rows`; return the final frontier (the rows that made it through)."""
        self._recover()
        if self.cache_wanted:
            self.response_cache = open_cache(self.options.cache_dir, lambda message: self.bus.emit(Notice(message)))
        saver = asyncio.ensure_future(self._save_sessions())
        try:
            source = self._ingest(raw_rows)
            await self.pool.start_persistent()
            for position, node in enumerate(self.nodes):
                await self.pool.before(position)
                source = await self._run_node(node, source)
                self.control.check()
                await self.pool.after(position)
            return source
        finally:
            saver.cancel()
            try:
                await self.pool.stop_all()
            finally:
                self.writer.flush()
                self.errors.close()
                if self.response_cache is not None:
                    self.response_cache.close()

    def _recover(self) -> None:
        """Read back what earlier sessions spent and failed (with retry_errors, forget every failure but the
        input's), then open the errors file: after its repair, which may replace it."""
        for node_id, stats in self.stats.items():
            stats.earlier = self.sessions.earlier_spent(node_id)
        if self.options.retry_errors:
            forget_finished(self.run_dir, keep=INPUT_ID)
        path = self.run_dir.errors
        self.failed, self.failed_rows = recover_errors(path, keep_node=INPUT_ID if self.options.retry_errors else None)
        self.errors = ErrorLog(self.writer, path, self.bus, self.failed_rows)

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

    def _reopen(self, node_id: str, yield_output: bool, total: int | None) -> Reopened | None:
        """Start the node: None when an earlier session finished it, else its files reopened. Its counts are restored."""
        state = NodeState(self.run_dir, node_id)
        finished = state.finished_counts()
        reopened = None if finished else state.reopen(self.writer, yield_output, self.failed.get(node_id, set()))
        counts = finished or (reopened.counts if reopened else Counts())
        stats = self.stats[node_id]
        stats.ok, stats.failed, stats.filtered, stats.rows_out = counts.ok, counts.failed, counts.filtered, counts.rows_out
        self.running[node_id] = time.perf_counter()
        if finished and total is None:
            total = stats.rows_in  # an input read to its end by an earlier session
        self.bus.emit(NodeStarted(node=node_id, kind=stats.kind, total=total, done=stats.rows_in))
        return reopened

    def _finish(self, node_id: str, files: NodeFiles | None) -> Path:
        """Close the node's files, record its time, and mark it done unless the run is stopping or `limit` left input
        rows unread (the node then has more rows to come)."""
        if files is not None:
            files.close()
        self.writer.flush()
        if self.response_cache is not None:
            self.response_cache.flush()
        self._tally_seconds()
        del self.running[node_id]
        stats = self.stats[node_id]
        complete = not self.control.stopping
        self.bus.emit(NodeFinished(node=node_id, stats=stats.snapshot(self.prices.get(node_id)), complete=complete))
        state = NodeState(self.run_dir, node_id)
        if files is not None and complete and not self.limited:
            state.mark_finished(Counts(stats.ok, stats.failed, stats.filtered, stats.rows_out))
        return state.frontier

    def _ingest(self, raw_rows: Iterable[inputs.RawRow]) -> Path:
        """Read the input rows into the input frontier (the first `limit` of them); note whether the limit leaves rows
        out, from the input if it is read now, else from its count when an earlier session finished it."""
        reopened = self._reopen(INPUT_ID, False, None)
        stats = self.stats[INPUT_ID]
        if reopened is None:
            self.limited = self.limit is not None and stats.rows_in > self.limit
        else:
            self.limited = ingest(
                raw_rows, self.input_model, reopened.decided, reopened.files, stats, self.errors, self.options.id_column, self.limit
            )
        return self._finish(INPUT_ID, reopened.files if reopened else None)

    async def _run_node(self, node: Node, source: Path) -> Path:
        if isinstance(node, Parallel):
            return await self._run_group(node, source)
        reopened = self._reopen(node.id, node.yield_output, count_rows(source))
        if reopened is None:
            return self._finish(node.id, None)
        decided = reopened.decided

        def pending() -> Iterator[Row]:
            """The source's rows this node has not decided, among those of the first `limit` input rows."""
            return (row for row in rows(source) if row.row_id not in decided and (self.limit is None or row.index < self.limit))

        tools = (reopened.files, self.stats[node.id], self.errors, self.control, self.kept[id(node)])
        if isinstance(node, Step):
            await self._step_stage(node, tools, pending).process(pending())
        else:
            await ApplyStage(*tools, node=node, models=self.models).process(pending())
        return self._finish(node.id, reopened.files)

    def _step_stage(
        self, step: Step, tools: tuple[NodeFiles, NodeStats, ErrorLog, StopSignal, frozenset[str]], pending: Callable[[], Iterator[Row]]
    ) -> StepStage:
        """The stage answering `step`: through batch jobs when its engine says so (`pending` reads its rows again
        when their answers come), else a request per row."""
        engine = self.pool.get(step.engine_name)
        if not engine.config.options.batch:
            return StepStage(*tools, step=step, engine=engine, response_cache=self.response_cache, cache_setting=self.options.cache)
        return BatchStage(
            *tools,
            step=step,
            engine=engine,
            response_cache=self.response_cache,
            cache_setting=self.options.cache,
            folder=self.run_dir.batch_folder(step.id),
            bus=self.bus,
            cancel_on_stop=self.options.cancel_batches,
            reread=pending,
        )

    async def _run_group(self, group: Parallel, source: Path) -> Path:
        tagged = tag_rows(source, self.run_dir.group_file(self.groups[id(group)], "tagged"))
        finals = await first_failure_cancels([self._run_branch(branch.steps, tagged) for branch in group.branches])
        return join_branches(group, source, list(finals), self._joined(group), self.kept[id(group)])

    def _joined(self, group: Parallel) -> Path:
        return self.run_dir.group_file(self.groups[id(group)], "joined")

    def flattened_sources(self, final: Path) -> list[Source]:
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
        return [Source(frontier, tuple(key for _, key in keys)) for frontier, keys in groupby(located, key=itemgetter(0))]

    async def _run_branch(self, nodes: list[Node], source: Path) -> Path:
        for node in nodes:
            source = await self._run_node(node, source)
        return source
