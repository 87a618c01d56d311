"""Chain: the user's steps wired into a graph, checked when built, run over input rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
import os
from pathlib import Path
import sys
from typing import Any

from pydantic import BaseModel

from chainette import graph
from chainette.cache import CacheSetting
from chainette.engines import EngineConfig, EngineOptions, check_keys, get_engine
from chainette.errors import ConfigError
from chainette.events import EventBus, Listener, Progress, RunFinished, RunStarted
from chainette.execution.executor import Executor
from chainette.execution.flatten import write_flattened
from chainette.execution.stopping import stop_on_signals, with_resume_hint
from chainette.inputs import Columns, ColumnSpec, Inputs, RawRow, fingerprint, open_rows
from chainette.nodes import INPUT_ID, Node, Step
from chainette.plugins import get_plugins
from chainette.results import RunResult
from chainette.run.rundir import FLATTENED, GRAPH_FILE, RUN_FILE, RunDir
from chainette.secrets import engine_secrets, redact_data


class Chain:
    """A named pipeline. `steps` holds Step and apply nodes; a nested list is a group of parallel Branches."""

    def __init__(self, *, name: str, steps: list[Any]):
        self.name = name
        self.nodes: list[Node] = graph.normalize(steps)
        graph.check(self.nodes)

    @property
    def input_model(self) -> type[BaseModel] | None:
        return graph.input_model(self.nodes)

    def engine_users(self) -> dict[str, list[str]]:
        """Each engine name the chain's steps use, with the ids of those steps."""
        users: dict[str, list[str]] = {}
        for node in graph.iter_nodes(self.nodes):
            if isinstance(node, Step):
                users.setdefault(node.engine_name, []).append(node.id)
        return users

    def engines(self) -> dict[str, EngineConfig[EngineOptions]]:
        """The engines the steps name, as registered now (ConfigError for one that is not)."""
        names = sorted({n.engine_name for n in graph.iter_nodes(self.nodes) if isinstance(n, Step)})
        return {name: get_engine(name) for name in names}

    def describe(self) -> dict[str, Any]:
        """The graph as plain data, without secrets (what graph.json holds)."""
        engines = {name: config.public_dict() for name, config in self.engines().items()}
        return {"chain": self.name, **graph.describe(self.nodes, engines)}

    def run(
        self,
        inputs: Inputs,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        retry_errors: bool = False,
        progress: bool | None = None,
        reporter: Listener | None = None,
        columns: ColumnSpec = None,
        id_column: str | None = None,
        output_format: str = "jsonl",
        durable: bool = False,
        cache: CacheSetting = True,
        cache_dir: str | os.PathLike[str] | None = None,
        batch: bool = False,
        cancel_batches: bool = False,
        limit: int | None = None,
    ) -> RunResult:
        """Run the chain over `inputs` (a JSONL, JSON, CSV or Parquet file, `hf:name[:config]:split`, or dicts/models).

        An `output_dir` holding an unfinished run of the same chain and inputs is resumed;
        `retry_errors` runs again the rows its errors file holds. `columns` picks and renames input
        fields ("text,label", "review=text,stars"); `id_column` names the input column holding each row's own id (unique;
        by default rows are numbered from 0); `output_format` is "jsonl" or "parquet". `durable` fsyncs every
        write, so that a power loss (not only a crash) loses no committed row. `progress` shows the live view
        (default: when in a terminal or a notebook); `reporter` receives every event instead. `cache`: answer
        from the response cache and store the new answers there (True), only store them ("refresh"), or neither
        (False); `cache_dir` replaces $CHAINETTE_CACHE_DIR (see chainette.cache). `batch` runs every step whose
        backend can as offline batch jobs (docs/batch.md); `cancel_batches` cancels those in flight on a stop.
        `limit` runs only the first `limit` input rows: a later run on the same `output_dir` goes on with the rest.
        Works inside a running event loop too (Jupyter): the run then happens on a worker thread.
        """
        if reporter is None and (progress if progress is not None else _interactive()):
            from chainette.ui.live import LiveView

            reporter = LiveView()
        coroutine = self.arun(
            inputs,
            output_dir=output_dir,
            overwrite=overwrite,
            retry_errors=retry_errors,
            reporter=reporter,
            columns=columns,
            id_column=id_column,
            output_format=output_format,
            durable=durable,
            cache=cache,
            cache_dir=cache_dir,
            batch=batch,
            cancel_batches=cancel_batches,
            limit=limit,
        )
        if not _loop_running():
            return asyncio.run(coroutine)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    async def arun(
        self,
        inputs: Inputs,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        retry_errors: bool = False,
        reporter: Listener | None = None,
        columns: ColumnSpec = None,
        id_column: str | None = None,
        output_format: str = "jsonl",
        durable: bool = False,
        cache: CacheSetting = True,
        cache_dir: str | os.PathLike[str] | None = None,
        batch: bool = False,
        cancel_batches: bool = False,
        limit: int | None = None,
    ) -> RunResult:
        """Async form of `run` (no live view unless a `reporter` is given)."""
        _check_limit(limit)
        engines = self.engines()
        _check_output_models(self.nodes, engines)
        check_keys(engines)
        picked = Columns.parse(columns)
        rows = open_rows(inputs, picked)
        identity = {
            "chain": graph.fingerprint(self.nodes),
            "inputs": fingerprint(inputs, picked, id_column),
            "nodes": graph.node_fingerprints(self.nodes),
        }
        run_dir = RunDir(
            _default_output_dir(self.name) if output_dir is None else output_dir, identity, overwrite=overwrite, output_format=output_format
        )
        try:
            return await self._run_in(
                run_dir,
                engines,
                rows,
                retry_errors=retry_errors,
                reporter=reporter,
                id_column=id_column,
                durable=durable,
                cache=cache,
                cache_dir=cache_dir,
                batch=batch,
                cancel_batches=cancel_batches,
                limit=limit,
            )
        finally:
            run_dir.close()

    async def _run_in(
        self,
        run_dir: RunDir,
        engines: dict[str, EngineConfig[EngineOptions]],
        rows: Iterable[RawRow],
        *,
        retry_errors: bool,
        reporter: Listener | None,
        id_column: str | None,
        durable: bool,
        cache: CacheSetting,
        cache_dir: str | os.PathLike[str] | None,
        batch: bool,
        cancel_batches: bool,
        limit: int | None,
    ) -> RunResult:
        """Run the chain over `rows` in `run_dir`, which this process owns meanwhile; run.json records how it ended."""
        run_dir.write_json(GRAPH_FILE, self.describe())
        secrets = frozenset().union(*(engine_secrets(config) for config in engines.values()))
        bus = EventBus([reporter] if reporter else [], secrets)
        run = Executor(
            self.nodes,
            run_dir,
            engines,
            retry_errors=retry_errors,
            id_column=id_column,
            durable=durable,
            cache=cache,
            cache_dir=cache_dir,
            batch=batch,
            cancel_batches=cancel_batches,
            limit=limit,
            bus=bus,
        )
        status, error = "failed", None
        outline = [{"id": INPUT_ID, "kind": "input", "label": "input"}, *graph.outline(self.nodes)]
        bus.emit(RunStarted(chain=self.name, output_dir=str(run_dir.root), resumed=run_dir.resumed, nodes=outline))
        ticker = asyncio.ensure_future(_tick(run, getattr(reporter, "interval", 1.0))) if reporter else None
        try:
            with stop_on_signals(run.control):
                final = await run.execute(rows)
            write_flattened(run_dir, final, run.flattened_sources(final))
            run_dir.export_parquet([*self._outputs(), FLATTENED])
            status = "limited" if run.limited else "completed"
        except BaseException as exc:
            if run.control.stopping or isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                status = "interrupted"
            else:
                error = f"{type(exc).__name__}: {exc}"
            if run.control.stopping:
                raise with_resume_hint(run.control.interrupted(), run.control, run_dir.root) from None
            raise
        finally:
            if ticker is not None:
                ticker.cancel()
            sessions = run.save_session(status)
            summary = {
                "chain": self.name,
                "status": status,
                "error": error,
                "resumed": run_dir.resumed,
                "limit": limit,
                "started_at": sessions[0]["started_at"],
                "finished_at": sessions[-1]["finished_at"],
                "seconds": round(sum(session["seconds"] for session in sessions), 3),
                **run.summary(),
                "sessions": sessions,
                "versions": _versions(engines),
            }
            run_dir.write_json(RUN_FILE, redact_data(summary, secrets))
            bus.emit(RunFinished(status=status, summary=summary))
        return RunResult(run_dir.root, self._outputs())

    def _outputs(self) -> dict[str, type[BaseModel] | None]:
        return {n.id: n.output_model for n in graph.iter_nodes(self.nodes) if n.yield_output}


async def _tick(run: Executor, interval: float) -> None:
    """Send a Progress snapshot of every node every `interval` seconds."""
    while True:
        await asyncio.sleep(interval)
        summary = run.summary()["steps"]
        run.bus.emit(Progress(nodes=summary))


def _interactive() -> bool:
    """Whether a live view makes sense: a terminal, or a Jupyter kernel."""
    if sys.stdout.isatty():
        return True
    return "ipykernel" in sys.modules


def _default_output_dir(name: str) -> Path:
    return Path("chainette-runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _check_limit(limit: int | None) -> None:
    """Refuse a `limit` that is not a positive number of rows."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"The limit must be a positive number of input rows (got {limit!r}); leave it out to run every row.")


def _check_output_models(nodes: list[Node], engines: dict[str, EngineConfig[EngineOptions]]) -> None:
    """Let each step's backend refuse, before any request, an output model its engine cannot be asked for (the
    ConfigError then names the step)."""
    for node in graph.iter_nodes(nodes):
        if isinstance(node, Step):
            config = engines[node.engine_name]
            try:
                get_plugins().hooks(config.backend).check_output_model(config, node.output_model)
            except ConfigError as exc:
                raise ConfigError(f"Step '{node.id}': {exc}", exc.loc, node=node) from None


def _versions(engines: dict[str, EngineConfig[EngineOptions]]) -> dict[str, str]:
    from chainette import __version__

    found = get_plugins().found
    versions = {"chainette-core": __version__}
    for config in engines.values():
        info = found[config.backend]
        versions[info.distribution] = info.version
    return versions


def _loop_running() -> bool:
    """Whether this thread runs an event loop (Jupyter does): asked apart, so that no error of the run is
    reported "during handling" of the RuntimeError that says there is none."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
