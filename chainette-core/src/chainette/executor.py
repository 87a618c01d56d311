"""Stage-by-stage execution. Each node streams rows from the previous node's frontier on disk,
keeps a bounded window of requests in flight, and writes every answer as it arrives.

Rows travel as `frontier.Row`s; each node commits one `frontier.Commit` per input row it passes
or filters out, and a row that fails goes to the errors file. A node's frontier and the errors
file are its commit log: a resumed node skips every row already committed there (see chainette.store
for the write order that keeps outputs and commits consistent after a crash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
import inspect
import json
from pathlib import Path
import sqlite3
import time
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from chainette import graph, inputs
from chainette.client import Answer, Request
from chainette.engines import EngineConfig, engine_price
from chainette.errors import BackendError, EngineError, RowError
from chainette.events import EventBus, NodeFinished, NodeStarted, RowFailed
from chainette.frontier import Commit, Row, count_rows, rows
from chainette.lifecycle import EnginePool, RunControl, RunningEngine
from chainette.nodes import Apply, Node, Parallel, Step
from chainette.policy import complete_with_retries
from chainette.sampling import translate
from chainette.schema import extract_json, format_instruction, json_schema, repair_messages
from chainette.secrets import redact_data
from chainette.stats import NodeStats, SessionLog
from chainette.store import LineFile, OutputFolder, RunDir, Writer, recover_errors, recover_node, write_atomically, write_lines_atomically
from chainette.templates import compile_template

INPUT_ID = "chain_input"
SAVE_EVERY = 1.0
YIELD_EVERY = 64  # rows a synchronous apply handles before letting the loop flush files and take signals


class NodeFiles:
    """A node's files for this pass, opened for appending: its frontier, and its output folder when it yields outputs."""

    def __init__(self, writer: Writer, frontier: Path, outputs: Path | None, output_rows: int):
        self.frontier_path = frontier
        self.frontier = LineFile(writer, frontier)
        self.outputs = OutputFolder(writer, outputs, output_rows) if outputs is not None else None

    def close(self) -> None:
        if self.outputs is not None:
            self.outputs.close()
        self.frontier.close()


class Run:
    """One execution (or resumption) of a chain's nodes into a run directory."""

    def __init__(
        self,
        nodes: list[Node],
        run_dir: RunDir,
        engines: dict[str, EngineConfig],
        *,
        retry_errors: bool = False,
        durable: bool = False,
        bus: EventBus | None = None,
    ):
        self.nodes = nodes
        self.run_dir = run_dir
        self.bus = bus or EventBus()
        self.control = RunControl()
        self.writer = Writer(durable=durable)
        self.input_model = graph.input_model(nodes)
        self.models: dict[str, type[BaseModel] | None] = {INPUT_ID: self.input_model}
        self.models.update({n.id: n.output_model for n in graph.iter_nodes(nodes)})
        self.sessions = SessionLog(run_dir.state, resumed=run_dir.resumed)
        self.stats = {INPUT_ID: NodeStats("input")}
        self.stats.update({n.id: NodeStats("step" if isinstance(n, Step) else "apply") for n in graph.iter_nodes(nodes)})
        for node_id, stats in self.stats.items():
            stats.earlier = self.sessions.earlier_spent(node_id)
        self.running: dict[str, float] = {}
        self.groups = {id(group): f"group{index}" for index, group in enumerate(graph.parallels(nodes))}
        self.pool = EnginePool(engines, [graph.engines_used(n) for n in nodes], run_dir.root, self.control, self.bus)
        self.prices = {name: engine_price(config) for name, config in engines.items()}
        self.engine_of = {n.id: n.engine_name for n in graph.iter_nodes(nodes) if isinstance(n, Step)}
        if retry_errors:
            for marker in self.run_dir.state.glob("*.done"):
                if marker.stem != INPUT_ID:
                    marker.unlink()
        self.failed = recover_errors(run_dir.root / "errors.jsonl", keep_node=INPUT_ID if retry_errors else None)
        self.errors = LineFile(self.writer, run_dir.root / "errors.jsonl")

    async def execute(self, rows: Iterable[inputs.RawRow]) -> Path:
        """Run every node over `rows`; return the final frontier (the rows that made it through)."""
        saver = asyncio.ensure_future(self._save_sessions())
        try:
            source = self._ingest(rows)
            await self.pool.start_persistent()
            for position, node in enumerate(self.nodes):
                await self.pool.before(position)
                source = await self._run_node(node, source)
                self._check_stopping()
                await self.pool.after(position)
            return source
        finally:
            saver.cancel()
            try:
                await self.pool.stop_all()
            finally:
                self.writer.flush()
                self.errors.close()

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

    def _check_stopping(self) -> None:
        if self.control.stopping:
            raise self.control.interrupted()

    def record_error(self, row_id: str, node_id: str, kind: str, message: str, raw: Any = None) -> None:
        """Append the row's failure to errors.jsonl (cleared of the engines' secrets) and announce it."""
        if self.bus.secrets:
            message, raw = redact_data([message, raw], self.bus.secrets)
        self.errors.write({"row_id": row_id, "step_id": node_id, "error_type": kind, "message": message, "raw": raw})
        self.bus.emit(RowFailed(node=node_id, row_id=row_id, error_type=kind, message=message))

    def _done_marker(self, node_id: str) -> Path:
        return self.run_dir.state / f"{node_id}.done"

    def _frontier_path(self, node_id: str) -> Path:
        return self.run_dir.state / f"{node_id}.jsonl"

    def _finished_earlier(self, node_id: str) -> bool:
        """Whether an earlier session finished the node; its row counts are then restored from the marker."""
        marker = self._done_marker(node_id)
        if not marker.exists():
            return False
        stats = self.stats[node_id]
        counts = json.loads(marker.read_text(encoding="utf-8"))
        stats.ok, stats.failed, stats.filtered = counts["ok"], counts["failed"], counts["filtered"]
        return True

    def _open(self, node_id: str, yield_output: bool) -> tuple[NodeFiles, set[str]]:
        """Recover the node's files, restore its row counts, and open them; also return the rows it already decided."""
        folder = self.run_dir.node_folder(node_id) if yield_output else None
        frontier = self._frontier_path(node_id)
        committed = recover_node(frontier, folder)
        failed = self.failed.get(node_id, set())
        stats = self.stats[node_id]
        stats.ok, stats.filtered, stats.failed = committed.passed, committed.filtered, len(failed)
        return NodeFiles(self.writer, frontier, folder, committed.rows), committed.sources | failed

    def _start(self, node_id: str, total: int | None) -> None:
        self.running[node_id] = time.perf_counter()
        self.bus.emit(NodeStarted(node=node_id, kind=self.stats[node_id].kind, total=total, done=self.stats[node_id].rows_in))

    def _finish(self, node_id: str, files: NodeFiles | None) -> Path:
        """Close the node's files, record its time, and mark it done unless the run is stopping."""
        if files is not None:
            files.close()
        self.writer.flush()
        if node_id in self.running:
            self._tally_seconds()
            del self.running[node_id]
        stats = self.stats[node_id]
        self.bus.emit(NodeFinished(node=node_id, stats=stats.snapshot(self._price(node_id))))
        if files is not None and not self.control.stopping:
            counts = {"ok": stats.ok, "failed": stats.failed, "filtered": stats.filtered}
            write_atomically(self._done_marker(node_id), json.dumps(counts).encode())
        return self._frontier_path(node_id)

    def _ingest(self, raw_rows: Iterable[inputs.RawRow]) -> Path:
        if self._finished_earlier(INPUT_ID):
            self._start(INPUT_ID, None)
            return self._finish(INPUT_ID, None)
        files, done = self._open(INPUT_ID, yield_output=False)
        stats = self.stats[INPUT_ID]
        self._start(INPUT_ID, None)
        for index, row in enumerate(raw_rows):
            row_id = str(index)
            if row_id in done:
                continue
            stats.session.rows += 1
            try:
                data = inputs.parse(row, self.input_model)
            except ValueError as exc:
                stats.failed += 1
                raw = row.value.rstrip("\n") if isinstance(row.value, str) else None
                self.record_error(row_id, INPUT_ID, "invalid_input", str(exc), raw)
                continue
            stats.ok += 1
            files.frontier.commit(Commit(row_id, [Row(row_id, {INPUT_ID: data}, INPUT_ID)]))
        return self._finish(INPUT_ID, files)

    async def _run_node(self, node: Node, source: Path) -> Path:
        if isinstance(node, Parallel):
            return await self._run_parallel(node, source)
        if self._finished_earlier(node.id):
            self._start(node.id, count_rows(source))
            return self._finish(node.id, None)
        files, done = self._open(node.id, node.yield_output)
        self._start(node.id, count_rows(source))
        pending = (row for row in rows(source) if row.row_id not in done)
        if isinstance(node, Step):
            await StepRunner(self, node, self.pool.get(node.engine_name), files).run(pending)
        else:
            await self._run_apply(node, pending, files)
        return self._finish(node.id, files)

    async def _run_apply(self, node: Apply, pending: Iterator[Row], files: NodeFiles) -> None:
        stats = self.stats[node.id]
        for count, row in enumerate(pending):
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if self.control.stopping:
                return
            stats.in_flight += 1
            try:
                results = await self._call_apply(node, row)
            except Exception as exc:
                stats.failed += 1
                self.record_error(row.row_id, node.id, "apply_error", f"{type(exc).__name__}: {exc}")
                continue
            finally:
                stats.in_flight -= 1
                stats.session.rows += 1
            children = []
            for index, data in enumerate(results):
                child_id = row.row_id if len(results) == 1 else f"{row.row_id}-{index}"
                if files.outputs is not None:
                    files.outputs.write({**data, "row_id": child_id})
                children.append(Row(child_id, {**row.ctx, node.id: data}, node.id, row.origin))
            files.frontier.commit(Commit(row.row_id, children))
            if children:
                stats.ok += 1
            else:
                stats.filtered += 1

    async def _call_apply(self, node: Apply, row: Row) -> list[dict[str, Any]]:
        direct = row.ctx[row.direct]
        model = node.input_model or self.models.get(row.direct)
        item = model.model_validate(direct) if model is not None else direct
        result = node.fn(item)
        if inspect.isawaitable(result):
            result = await result
        items = result if isinstance(result, list) else [result]
        return [_as_data(node, out) for out in items]

    async def _run_parallel(self, group: Parallel, source: Path) -> Path:
        name = self.groups[id(group)]
        tagged = self.run_dir.state / f"{name}.tagged.jsonl"
        write_lines_atomically(
            tagged, (Commit(row.row_id, [Row(row.row_id, row.ctx, row.direct, row.row_id)]).encode() for row in rows(source))
        )
        finals = await asyncio.gather(*(self._run_branch(branch.steps, tagged) for branch in group.branches))
        joined = [(branch.alias, final) for branch, final in zip(group.branches, finals, strict=True) if branch.alias]
        if not joined:
            return source
        target = self.run_dir.state / f"{name}.joined.jsonl"
        with _JoinIndex(self.run_dir.state / f"{name}.sqlite") as index:
            for alias, final in joined:
                index.add(alias, rows(final))
            write_lines_atomically(target, _joined_rows(source, index, [alias for alias, _ in joined]))
        return target

    async def _run_branch(self, nodes: list[Node], source: Path) -> Path:
        for node in nodes:
            source = await self._run_node(node, source)
        return source

    def _price(self, node_id: str) -> tuple[float, float] | None:
        return self.prices.get(self.engine_of.get(node_id, ""))

    def summary(self) -> dict[str, Any]:
        """The figures of run.json: input rows, and per node rows, requests, tokens, cost (None when the price is unknown), time."""
        steps = {node_id: stats.snapshot(self._price(node_id)) for node_id, stats in self.stats.items() if node_id != INPUT_ID}
        costs = [node["cost_usd"] for node in steps.values() if node["cost_usd"] is not None]
        source = self.stats[INPUT_ID]
        return {
            "input": {"rows": source.rows_in, "invalid": source.failed},
            "steps": steps,
            "cost_usd": round(sum(costs), 6) if costs else None,
        }


def _joined_rows(source: Path, index: _JoinIndex, aliases: list[str]) -> Iterator[bytes]:
    """The group's output: each row of `source` that every joined branch produced, with the branches' values by alias."""
    for row in rows(source):
        values = index.lookup(row.row_id)
        if all(alias in values for alias in aliases):
            yield Commit(row.row_id, [Row(row.row_id, {**row.ctx, **values}, row.direct, row.origin)]).encode()


def _as_data(node: Apply, out: Any) -> dict[str, Any]:
    if isinstance(out, BaseModel):
        if node.output_model is not None and not isinstance(out, node.output_model):
            out = node.output_model.model_validate(out.model_dump())
        return out.model_dump(mode="json")
    if isinstance(out, dict):
        if node.output_model is not None:
            return node.output_model.model_validate(out).model_dump(mode="json")
        return out
    raise TypeError(f"apply '{node.id}' returned {type(out).__name__}; return a pydantic model, a dict, or a list of them")


class _JoinIndex:
    """Branch results keyed by the row they came from, on disk, so that a join needs no memory per row."""

    def __init__(self, path: Path):
        self.path = path
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE joined (origin TEXT, alias TEXT, value BLOB)")

    def add(self, alias: str, branch_rows: Iterable[Row]) -> None:
        values = ((row.origin, alias, orjson.dumps(row.ctx[row.direct])) for row in branch_rows)
        self.db.executemany("INSERT INTO joined VALUES (?, ?, ?)", values)
        self.db.execute("CREATE INDEX IF NOT EXISTS by_origin ON joined (origin)")

    def lookup(self, origin: str) -> dict[str, Any]:
        """Each alias's value for `origin`: the branch's output, or the list of them when the branch fanned out."""
        found: dict[str, list[Any]] = {}
        for alias, value in self.db.execute("SELECT alias, value FROM joined WHERE origin = ? ORDER BY rowid", (origin,)):
            found.setdefault(alias, []).append(orjson.loads(value))
        return {alias: values[0] if len(values) == 1 else values for alias, values in found.items()}

    def __enter__(self) -> _JoinIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


class StepRunner:
    """Runs one Step over a frontier: renders prompts, sends requests through the engine, validates answers."""

    def __init__(self, run: Run, step: Step, engine: RunningEngine, files: NodeFiles):
        self.run_state = run
        self.step = step
        self.engine = engine
        self.files = files
        self.stats = run.stats[step.id]
        self.system = compile_template(step.system_prompt) if step.system_prompt else None
        self.user = compile_template(step.user_prompt)
        instruction = step.output_format_instruction
        self.instruction = format_instruction(step.output_model) if instruction is None else instruction
        self.schema = json_schema(step.output_model)
        config = engine.config
        self.sampling = translate(config, step.sampling)

    async def run(self, pending: Iterator[Row]) -> None:
        control = self.run_state.control

        async def worker() -> None:
            for row in pending:
                if control.stopping:
                    return
                await self._answer_row(row)

        await run_workers(self.engine.config.options.max_concurrency, worker)

    async def _answer_row(self, row: Row) -> None:
        self.stats.in_flight += 1
        try:
            data, answer = await self._answer(row)
        except EngineError:
            raise
        except BackendError as exc:
            self.stats.failed += 1
            self.run_state.record_error(row.row_id, self.step.id, exc.kind, str(exc), exc.raw)
            return
        finally:
            self.stats.in_flight -= 1
            self.stats.session.rows += 1
        self.stats.ok += 1
        ctx = {**row.ctx, self.step.id: data}
        line = {**data, "row_id": row.row_id}
        if answer.reasoning is not None:
            key = f"{self.step.id}_reasoning"
            ctx[key] = line[key] = answer.reasoning
        if self.files.outputs is not None:
            self.files.outputs.write(line)
        self.files.frontier.commit(Commit(row.row_id, [Row(row.row_id, ctx, self.step.id, row.origin)]))

    async def _answer(self, row: Row) -> tuple[dict[str, Any], Answer]:
        request = self._request(row)
        answer = await self._send(request)
        try:
            return self._validate(answer.text), answer
        except ValidationError as exc:
            first_error = _short(exc)
        repair = Request(
            repair_messages(request.messages, answer.text, first_error),
            request.schema,
            request.schema_name,
            request.sampling,
            request.step_id,
            request.row_id,
        )
        self.stats.session.repairs += 1
        answer = await self._send(repair)
        try:
            return self._validate(answer.text), answer
        except ValidationError as exc:
            raise RowError(
                f"the answer does not match {self.step.output_model.__name__} after one repair request: {_short(exc)}",
                kind="validation",
                raw=answer.text,
            ) from None

    def _request(self, row: Row) -> Request:
        direct = row.ctx[row.direct]
        context = {**direct, **row.ctx, "row_id": row.row_id} if isinstance(direct, dict) else {**row.ctx, "row_id": row.row_id}
        try:
            system = self.system(context) if self.system else ""
            user = self.user(context)
        except Exception as exc:
            raise RowError(f"cannot render the prompt: {exc}", kind="template") from None
        if self.instruction:
            system = f"{system}\n\n{self.instruction}" if system else self.instruction
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return Request(messages, self.schema, self.step.output_model.__name__, self.sampling, self.step.id, row.row_id)

    async def _send(self, request: Request) -> Answer:
        return await complete_with_retries(self.engine.client, request, self.engine.gate, self.stats.session)

    def _validate(self, text: str) -> dict[str, Any]:
        return self.step.output_model.model_validate_json(extract_json(text)).model_dump(mode="json")


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors(include_url=False))


async def run_workers(count: int, worker: Callable[[], Awaitable[None]]) -> None:
    """Run `count` copies of `worker` until all finish; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(worker()) for _ in range(count)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
