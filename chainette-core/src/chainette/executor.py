"""Stage-by-stage execution. Each node streams rows from the previous node's frontier on disk,
keeps a bounded window of requests in flight, and writes every answer as it arrives.

A row travels as a frontier record `{"row_id", "ctx", "direct"[, "src", "origin"]}`: `ctx` holds
the chain input and every earlier output by id, `direct` names the entry that is the node's
direct input, `src` the row it came from when an apply fanned it out. A frontier line
`{"src", "skip": 1}` records a row an apply filtered out. A node's frontier and the errors file
are its commit log: a resumed node skips every row already committed there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
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
from chainette.lifecycle import EnginePool, RunControl, RunningEngine
from chainette.nodes import Apply, Node, Parallel, Step
from chainette.plugins import get_plugins
from chainette.policy import complete_with_retries
from chainette.schema import extract_json, format_instruction, json_schema, repair_messages
from chainette.store import Journal, LineFile, OutputFolder, RunDir, drop_partial_line, keep_lines, read_lines
from chainette.templates import compile_template

Record = dict[str, Any]
INPUT_ID = "chain_input"


@dataclass
class NodeStats:
    """Counts for one node: rows in, answered (ok), failed, filtered out by an apply, tokens, seconds."""

    kind: str
    rows_in: int = 0
    ok: int = 0
    failed: int = 0
    filtered: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0


class NodeFiles:
    """A node's state for this pass: the rows it already committed, and its files opened for appending."""

    def __init__(self, run: Run, node_id: str, yield_output: bool):
        self.frontier_path = run.run_dir.state / f"{node_id}.jsonl"
        drop_partial_line(self.frontier_path)
        row_ids: set[str] = set()
        sources: set[str] = set()
        skipped = 0
        for record in read_lines(self.frontier_path):
            source = record.get("src", record.get("row_id"))
            sources.add(source)
            if record.get("skip"):
                skipped += 1
            else:
                row_ids.add(record["row_id"])
        failed = run.failed.get(node_id, set())
        self.done = sources | failed
        stats = run.stats[node_id]
        stats.filtered, stats.failed = skipped, len(failed)
        stats.ok = len(sources) - skipped
        stats.rows_in = stats.ok + stats.filtered + stats.failed
        self.outputs: OutputFolder | None = None
        if yield_output:
            folder = run.run_dir.node_folder(node_id)
            for path in sorted(folder.glob("*.jsonl")):
                keep_lines(path, lambda line: line["row_id"] in row_ids)
            self.outputs = OutputFolder(run.journal, folder)
        self.frontier = LineFile(run.journal, self.frontier_path)

    def close(self) -> None:
        if self.outputs is not None:
            self.outputs.close()
        self.frontier.close()


def live(path: Path) -> Iterator[Record]:
    """The rows of a frontier that go on (filter markers left out)."""
    return (record for record in read_lines(path) if not record.get("skip"))


def count_live(path: Path) -> int:
    """How many rows of a frontier go on, counted without decoding them."""
    if not path.exists():
        return 0
    with open(path, "rb") as file:
        return sum(1 for line in file if b'"skip":1' not in line)


class Run:
    """One execution (or resumption) of a chain's nodes into a run directory."""

    def __init__(
        self,
        nodes: list[Node],
        run_dir: RunDir,
        engines: dict[str, EngineConfig],
        *,
        retry_errors: bool = False,
        bus: EventBus | None = None,
    ):
        self.nodes = nodes
        self.run_dir = run_dir
        self.bus = bus or EventBus()
        self.control = RunControl()
        self.journal = Journal()
        self.input_model = graph.input_model(nodes)
        self.models: dict[str, type[BaseModel] | None] = {INPUT_ID: self.input_model}
        self.models.update({n.id: n.output_model for n in graph.iter_nodes(nodes)})
        self.stats = {n.id: NodeStats("step" if isinstance(n, Step) else "apply") for n in graph.iter_nodes(nodes)}
        self.stats[INPUT_ID] = NodeStats("input")
        self.groups = {id(group): f"group{index}" for index, group in enumerate(graph.parallels(nodes))}
        self.pool = EnginePool(engines, [graph.engines_used(n) for n in nodes], run_dir.root, self.control, self.bus)
        self.prices = {name: engine_price(config) for name, config in engines.items()}
        self.engine_of = {n.id: n.engine_name for n in graph.iter_nodes(nodes) if isinstance(n, Step)}
        self.failed = self._recover_errors(retry_errors)
        self.errors = LineFile(self.journal, run_dir.root / "errors.jsonl")

    def _recover_errors(self, retry_errors: bool) -> dict[str, set[str]]:
        """The failed rows already committed, by node; with `retry_errors`, forget those of steps and applies."""
        path = self.run_dir.root / "errors.jsonl"
        drop_partial_line(path)
        if retry_errors:
            keep_lines(path, lambda error: error["step_id"] == INPUT_ID)
            for marker in self.run_dir.state.glob("*.done"):
                if marker.stem != INPUT_ID:
                    marker.unlink()
        failed: dict[str, set[str]] = {}
        for error in read_lines(path):
            failed.setdefault(error["step_id"], set()).add(error["row_id"])
        return failed

    async def execute(self, rows: Iterable[inputs.RawRow]) -> Path:
        """Run every node over `rows`; return the final frontier (the rows that made it through)."""
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
            try:
                await self.pool.stop_all()
            finally:
                self.journal.flush()
                self.errors.close()

    def _check_stopping(self) -> None:
        if self.control.stopping:
            raise self.control.interrupted()

    def record_error(self, row_id: str, node_id: str, kind: str, message: str, raw: Any = None) -> None:
        self.errors.write({"row_id": row_id, "step_id": node_id, "error_type": kind, "message": message, "raw": raw})
        self.bus.emit(RowFailed(node=node_id, row_id=row_id, error_type=kind, message=message))

    def _done_marker(self, node_id: str) -> Path:
        return self.run_dir.state / f"{node_id}.done"

    def _already_done(self, node_id: str) -> Path | None:
        """The node's frontier when an earlier pass finished it (its counts restored), else None."""
        marker = self._done_marker(node_id)
        if not marker.exists():
            return None
        stats = self.stats[node_id]
        for key, value in json.loads(marker.read_text(encoding="utf-8")).items():
            setattr(stats, key, value)
        self.bus.emit(NodeStarted(node=node_id, kind=stats.kind, total=stats.rows_in))
        self.bus.emit(NodeFinished(node=node_id, stats=asdict(stats)))
        return self.run_dir.state / f"{node_id}.jsonl"

    def _finish(self, node_id: str, files: NodeFiles) -> Path:
        files.close()
        self.journal.flush()
        stats = asdict(self.stats[node_id])
        self.bus.emit(NodeFinished(node=node_id, stats=stats))
        if not self.control.stopping:
            del stats["kind"]
            self._done_marker(node_id).write_text(json.dumps(stats), encoding="utf-8")
        return files.frontier_path

    def _ingest(self, rows: Iterable[inputs.RawRow]) -> Path:
        done_path = self._already_done(INPUT_ID)
        if done_path is not None:
            return done_path
        files = NodeFiles(self, INPUT_ID, yield_output=False)
        stats = self.stats[INPUT_ID]
        self.bus.emit(NodeStarted(node=INPUT_ID, kind="input", total=None))
        for index, row in enumerate(rows):
            row_id = str(index)
            if row_id in files.done:
                continue
            stats.rows_in += 1
            try:
                data = inputs.parse(row, self.input_model)
            except ValueError as exc:
                stats.failed += 1
                raw = row.value.rstrip("\n") if isinstance(row.value, str) else None
                self.record_error(row_id, INPUT_ID, "invalid_input", str(exc), raw)
                continue
            stats.ok += 1
            files.frontier.write({"row_id": row_id, "ctx": {INPUT_ID: data}, "direct": INPUT_ID})
        return self._finish(INPUT_ID, files)

    async def _run_node(self, node: Node, source: Path) -> Path:
        if isinstance(node, Parallel):
            return await self._run_parallel(node, source)
        done_path = self._already_done(node.id)
        if done_path is not None:
            return done_path
        started = time.perf_counter()
        files = NodeFiles(self, node.id, node.yield_output)
        self.bus.emit(NodeStarted(node=node.id, kind=self.stats[node.id].kind, total=count_live(source)))
        records = (record for record in live(source) if record["row_id"] not in files.done)
        try:
            if isinstance(node, Step):
                await StepRunner(self, node, self.pool.get(node.engine_name), files).run(records)
            else:
                await self._run_apply(node, records, files)
        finally:
            self.stats[node.id].seconds += time.perf_counter() - started
        return self._finish(node.id, files)

    async def _run_apply(self, node: Apply, records: Iterator[Record], files: NodeFiles) -> None:
        stats = self.stats[node.id]
        for record in records:
            if self.control.stopping:
                return
            stats.rows_in += 1
            row_id = record["row_id"]
            try:
                results = await self._call_apply(node, record)
            except Exception as exc:
                stats.failed += 1
                self.record_error(row_id, node.id, "apply_error", f"{type(exc).__name__}: {exc}")
                continue
            if not results:
                stats.filtered += 1
                files.frontier.write({"src": row_id, "skip": 1})
                continue
            stats.ok += 1
            for index, data in enumerate(results):
                child_id = row_id if len(results) == 1 else f"{row_id}-{index}"
                if files.outputs is not None:
                    files.outputs.write({**data, "row_id": child_id})
                child = {**record, "row_id": child_id, "ctx": {**record["ctx"], node.id: data}, "direct": node.id}
                if child_id != row_id:
                    child["src"] = row_id
                files.frontier.write(child)

    async def _call_apply(self, node: Apply, record: Record) -> list[dict[str, Any]]:
        direct = record["ctx"][record["direct"]]
        model = node.input_model or self.models.get(record["direct"])
        item = model.model_validate(direct) if model is not None else direct
        result = node.fn(item)
        if inspect.isawaitable(result):
            result = await result
        items = result if isinstance(result, list) else [result]
        return [_as_data(node, out) for out in items]

    async def _run_parallel(self, group: Parallel, source: Path) -> Path:
        name = self.groups[id(group)]
        tagged = self.run_dir.state / f"{name}.tagged.jsonl"
        _rewrite(tagged, ({**record, "origin": record["row_id"]} for record in live(source)))
        finals = await asyncio.gather(*(self._run_branch(branch.steps, tagged) for branch in group.branches))
        joined = [(branch.alias, final) for branch, final in zip(group.branches, finals, strict=True) if branch.alias]
        if not joined:
            return source
        target = self.run_dir.state / f"{name}.joined.jsonl"
        with _JoinIndex(self.run_dir.state / f"{name}.sqlite") as index:
            for alias, final in joined:
                index.add(alias, live(final))
            _rewrite(target, _joined_rows(source, index, [alias for alias, _ in joined]))
        return target

    async def _run_branch(self, nodes: list[Node], source: Path) -> Path:
        for node in nodes:
            source = await self._run_node(node, source)
        return source

    def summary(self) -> dict[str, Any]:
        """The counts of run.json: input rows, and per node rows, tokens, cost (None when the price is unknown), time."""
        stats = {key: asdict(value) for key, value in self.stats.items()}
        source = stats.pop(INPUT_ID)
        for node_id, node in stats.items():
            node["cost_usd"] = self._cost(node_id, node)
        costs = [node["cost_usd"] for node in stats.values() if node["cost_usd"] is not None]
        return {
            "input": {"rows": source["rows_in"], "invalid": source["failed"]},
            "steps": stats,
            "cost_usd": round(sum(costs), 6) if costs else None,
        }

    def _cost(self, node_id: str, node: dict[str, Any]) -> float | None:
        price = self.prices.get(self.engine_of.get(node_id, ""))
        if price is None:
            return None
        return round((node["input_tokens"] * price[0] + node["output_tokens"] * price[1]) / 1_000_000, 6)


def _joined_rows(source: Path, index: _JoinIndex, aliases: list[str]) -> Iterator[Record]:
    for record in live(source):
        values = index.lookup(record["row_id"])
        if all(alias in values for alias in aliases):
            yield {**record, "ctx": {**record["ctx"], **values}}


def _rewrite(path: Path, records: Iterable[Record]) -> None:
    """Write a derived frontier in full (to a temporary file first, so a crash never leaves half of it)."""
    temporary = path.with_suffix(".tmp")
    journal = Journal()
    file = LineFile(journal, temporary)
    for record in records:
        file.write(record)
    file.close()
    temporary.replace(path)


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

    def add(self, alias: str, records: Iterable[Record]) -> None:
        rows = ((r["origin"], alias, orjson.dumps(r["ctx"][r["direct"]])) for r in records)
        self.db.executemany("INSERT INTO joined VALUES (?, ?, ?)", rows)
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
        sampling = (
            get_plugins().call(config.backend, "translate_sampling", config=config, sampling=step.sampling) if step.sampling else None
        )
        self.sampling = sampling or {}

    async def run(self, records: Iterator[Record]) -> None:
        control = self.run_state.control

        async def worker() -> None:
            for record in records:
                if control.stopping:
                    return
                await self._answer_row(record)

        await run_workers(self.engine.config.options.max_concurrency, worker)

    async def _answer_row(self, record: Record) -> None:
        row_id = record["row_id"]
        self.stats.rows_in += 1
        try:
            data, answer = await self._answer(record)
        except EngineError:
            raise
        except BackendError as exc:
            self.stats.failed += 1
            self.run_state.record_error(row_id, self.step.id, exc.kind, str(exc), exc.raw)
            return
        self.stats.ok += 1
        ctx = {**record["ctx"], self.step.id: data}
        line = {**data, "row_id": row_id}
        if answer.reasoning is not None:
            key = f"{self.step.id}_reasoning"
            ctx[key] = line[key] = answer.reasoning
        if self.files.outputs is not None:
            self.files.outputs.write(line)
        self.files.frontier.write({**record, "ctx": ctx, "direct": self.step.id})

    async def _answer(self, record: Record) -> tuple[dict[str, Any], Answer]:
        request = self._request(record)
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
        answer = await self._send(repair)
        try:
            return self._validate(answer.text), answer
        except ValidationError as exc:
            raise RowError(
                f"the answer does not match {self.step.output_model.__name__} after one repair request: {_short(exc)}",
                kind="validation",
                raw=answer.text,
            ) from None

    def _request(self, record: Record) -> Request:
        ctx = record["ctx"]
        direct = ctx[record["direct"]]
        context = {**direct, **ctx, "row_id": record["row_id"]} if isinstance(direct, dict) else {**ctx, "row_id": record["row_id"]}
        try:
            system = self.system(context) if self.system else ""
            user = self.user(context)
        except Exception as exc:
            raise RowError(f"cannot render the prompt: {exc}", kind="template") from None
        if self.instruction:
            system = f"{system}\n\n{self.instruction}" if system else self.instruction
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return Request(messages, self.schema, self.step.output_model.__name__, self.sampling, self.step.id, record["row_id"])

    async def _send(self, request: Request) -> Answer:
        answer = await complete_with_retries(self.engine.client, request, self.engine.gate)
        self.stats.input_tokens += answer.usage.input_tokens
        self.stats.output_tokens += answer.usage.output_tokens
        return answer

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
