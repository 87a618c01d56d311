"""Stage-by-stage execution. Each node streams rows from the previous node's results on disk,
keeps a bounded window of requests in flight, and writes every answer as it arrives.

A row travels as a record `{"row_id", "ctx", "direct"[, "origin"]}`: `ctx` holds the chain input
and every earlier output by id, `direct` names the entry that is the node's direct input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
import inspect
import json
from pathlib import Path
import sqlite3
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from chainette import graph, inputs
from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import BackendError, EngineError, RowError
from chainette.lifecycle import EnginePool, RunningEngine
from chainette.nodes import Apply, Node, Parallel, Step
from chainette.plugins import get_plugins
from chainette.policy import complete_with_retries
from chainette.schema import extract_json, format_instruction, json_schema, repair_messages
from chainette.store import JsonlFile, JsonlWriter, RunDir, read_lines
from chainette.templates import compile_template

Record = dict[str, Any]


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


class Run:
    """One execution of a chain's nodes into a run directory."""

    def __init__(self, nodes: list[Node], run_dir: RunDir, engines: dict[str, EngineConfig]):
        self.nodes = nodes
        self.run_dir = run_dir
        self.input_model = graph.input_model(nodes)
        self.models: dict[str, type[BaseModel] | None] = {"chain_input": self.input_model}
        self.models.update({n.id: n.output_model for n in graph.iter_nodes(nodes)})
        self.stats = {n.id: NodeStats("step" if isinstance(n, Step) else "apply") for n in graph.iter_nodes(nodes)}
        self.input_stats = {"rows": 0, "invalid": 0}
        self.pool = EnginePool(engines, [graph.engines_used(n) for n in nodes], run_dir.root)
        self._frontiers = 0
        self.errors = JsonlFile(run_dir.root / "errors.jsonl")

    async def execute(self, rows: Iterable[inputs.RawRow]) -> Path:
        """Run every node over `rows`; return the final frontier (the rows that made it through)."""
        try:
            source = self._ingest(rows)
            await self.pool.start_persistent()
            for position, node in enumerate(self.nodes):
                await self.pool.before(position)
                source = await self._run_node(node, source)
                await self.pool.after(position)
            return source
        finally:
            try:
                await self.pool.stop_all()
            finally:
                self.errors.close()

    def record_error(self, row_id: str, node_id: str, kind: str, message: str, raw: Any = None) -> None:
        self.errors.write({"row_id": row_id, "step_id": node_id, "error_type": kind, "message": message, "raw": raw})

    def _new_frontier(self) -> JsonlFile:
        self._frontiers += 1
        return JsonlFile(self.run_dir.state / f"{self._frontiers:04d}.jsonl")

    def _ingest(self, rows: Iterable[inputs.RawRow]) -> Path:
        with self._new_frontier() as frontier:
            for index, row in enumerate(rows):
                row_id = str(index)
                self.input_stats["rows"] += 1
                try:
                    data = inputs.parse(row, self.input_model)
                except ValueError as exc:
                    self.input_stats["invalid"] += 1
                    raw = row.value if isinstance(row.value, str) else None
                    self.record_error(row_id, "chain_input", "invalid_input", str(exc), raw.rstrip("\n") if raw else None)
                    continue
                frontier.write({"row_id": row_id, "ctx": {"chain_input": data}, "direct": "chain_input"})
        return frontier.path

    async def _run_node(self, node: Node, source: Path) -> Path:
        if isinstance(node, Parallel):
            return await self._run_parallel(node, source)
        started = time.perf_counter()
        writer = JsonlWriter(self.run_dir.node_folder(node.id)) if node.yield_output else None
        try:
            with self._new_frontier() as frontier:
                if isinstance(node, Step):
                    await StepRunner(self, node, self.pool.get(node.engine_name)).run(source, frontier, writer)
                else:
                    await self._run_apply(node, source, frontier, writer)
        finally:
            if writer is not None:
                writer.close()
            self.stats[node.id].seconds += time.perf_counter() - started
        return frontier.path

    async def _run_apply(self, node: Apply, source: Path, frontier: JsonlFile, writer: JsonlWriter | None) -> None:
        stats = self.stats[node.id]
        for record in read_lines(source):
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
                continue
            stats.ok += 1
            for index, data in enumerate(results):
                child_id = row_id if len(results) == 1 else f"{row_id}-{index}"
                if writer is not None:
                    writer.write({**data, "row_id": child_id})
                ctx = {**record["ctx"], node.id: data}
                frontier.write({**record, "row_id": child_id, "ctx": ctx, "direct": node.id})

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
        with self._new_frontier() as tagged:
            for record in read_lines(source):
                tagged.write({**record, "origin": record["row_id"]})
        finals = await asyncio.gather(*(self._run_branch(branch.steps, tagged.path) for branch in group.branches))
        joined = [(branch.alias, final) for branch, final in zip(group.branches, finals, strict=True) if branch.alias]
        if not joined:
            return source
        with _JoinIndex(self.run_dir.state / f"join-{self._frontiers:04d}.sqlite") as index:
            for alias, final in joined:
                index.add(alias, read_lines(final))
            with self._new_frontier() as frontier:
                for record in read_lines(source):
                    values = index.lookup(record["row_id"])
                    if all(alias in values for alias, _ in joined):
                        frontier.write({**record, "ctx": {**record["ctx"], **values}})
        return frontier.path

    async def _run_branch(self, nodes: list[Node], source: Path) -> Path:
        for node in nodes:
            source = await self._run_node(node, source)
        return source

    def summary(self) -> dict[str, Any]:
        return {"input": dict(self.input_stats), "steps": {k: asdict(v) for k, v in self.stats.items()}}


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
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE joined (origin TEXT, alias TEXT, value TEXT)")

    def add(self, alias: str, records: Iterable[Record]) -> None:
        rows = ((r["origin"], alias, json.dumps(r["ctx"][r["direct"]])) for r in records)
        self.db.executemany("INSERT INTO joined VALUES (?, ?, ?)", rows)
        self.db.execute("CREATE INDEX IF NOT EXISTS by_origin ON joined (origin)")

    def lookup(self, origin: str) -> dict[str, Any]:
        """Each alias's value for `origin`: the branch's output, or the list of them when the branch fanned out."""
        found: dict[str, list[Any]] = {}
        for alias, value in self.db.execute("SELECT alias, value FROM joined WHERE origin = ? ORDER BY rowid", (origin,)):
            found.setdefault(alias, []).append(json.loads(value))
        return {alias: values[0] if len(values) == 1 else values for alias, values in found.items()}

    def __enter__(self) -> _JoinIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


class StepRunner:
    """Runs one Step over a frontier: renders prompts, sends requests through the engine, validates answers."""

    def __init__(self, run: Run, step: Step, engine: RunningEngine):
        self.run_state = run
        self.step = step
        self.engine = engine
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

    async def run(self, source: Path, frontier: JsonlFile, writer: JsonlWriter | None) -> None:
        records = read_lines(source)

        async def worker() -> None:
            for record in records:
                await self._answer_row(record, frontier, writer)

        await run_workers(self.engine.config.options.max_concurrency, worker)

    async def _answer_row(self, record: Record, frontier: JsonlFile, writer: JsonlWriter | None) -> None:
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
        if writer is not None:
            writer.write(line)
        frontier.write({**record, "ctx": ctx, "direct": self.step.id})

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
            system = self.system.render(context) if self.system else ""
            user = self.user.render(context)
        except Exception as exc:
            raise RowError(f"cannot render the prompt: {exc}", kind="template") from None
        if self.instruction:
            system = f"{system}\n\n{self.instruction}" if system else self.instruction
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return Request(messages, self.schema, self.step.output_model.__name__, self.sampling, self.step.id, record["row_id"])

    async def _send(self, request: Request) -> Answer:
        answer = await complete_with_retries(self.engine.client, request, self.engine.config, self.engine.slots)
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
