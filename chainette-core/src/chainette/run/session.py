"""A run session: one run of a chain over its inputs, from opening the run directory to writing how it ended.

Open: check the chain's engines and output models, open the inputs and the run directory (resumed, started afresh
or refused; its lock held from here). Execute: one session of the executor, then the flattened table and the
Parquet files. Close: run.json records how the session ended (every session's figures), and the lock is released.
With outputs at a URL the run directory is a local staging folder, uploaded when the session ends (chainette.run.staging).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from chainette import graph
from chainette.engines import EngineConfig, EngineOptions, check_keys
from chainette.errors import ConfigError
from chainette.events import EventBus, Progress, RunFinished, RunStarted
from chainette.execution.executor import Executor
from chainette.execution.prompts import placed_media
from chainette.execution.stopping import stop_on_signals, with_resume_hint
from chainette.inputs import Columns, Inputs, fingerprint, open_rows
from chainette.nodes import INPUT_ID, Node, Step
from chainette.plugins import get_plugins
from chainette.remote import is_url
from chainette.results import RunResult
from chainette.run.budget import Budget, check_priced
from chainette.run.options import RunOptions
from chainette.run.rundir import FLATTENED, GRAPH_FILE, RUN_FILE, RunDir
from chainette.run.runner import run_on
from chainette.run.staging import RemoteOutput
from chainette.secrets import engine_secrets, redact_data

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chainette.chain import Chain
    from chainette.telemetry import Telemetry

MakeExecutor = Callable[[list[Node], RunDir, dict[str, EngineConfig[EngineOptions]], RunOptions, EventBus], Executor]
"""What makes the executor of a session: the core's `Executor`, or a runner's subclass (or a factory of one)."""


def run_blocking(chain: Chain, inputs: Inputs, options: RunOptions) -> RunResult:
    """Run `chain` over `inputs` to its end, here or with the runner `options.on` names; inside a running event loop
    (Jupyter) the run happens on a worker thread."""
    if options.on is not None:
        return run_on(chain, inputs, options)
    if not _loop_running():
        return asyncio.run(run(chain, inputs, options))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run(chain, inputs, options)).result()


async def run(chain: Chain, inputs: Inputs, options: RunOptions) -> RunResult:
    """Open a session of `chain` over `inputs`, execute it and close it, however it ends (with a runner, `options.on`:
    on a worker thread, since a runner's `run` blocks)."""
    if options.on is not None:
        return await asyncio.to_thread(run_on, chain, inputs, options)
    with RunSession(chain, inputs, options) as session:
        return await session.execute()


class RunSession:
    """One session of a run: opened when made (checks done, run directory owned), executed once, closed on exit."""

    def __init__(self, chain: Chain, inputs: Inputs, options: RunOptions):
        self.chain = chain
        self.options = options
        self.engines = chain.engines()
        _check_output_models(chain.nodes, self.engines)
        _check_input_media(chain.nodes, self.engines, chain.input_model)
        check_keys(self.engines)
        if options.max_cost is not None:
            check_priced({n.id: n.engine_name for n in graph.iter_nodes(chain.nodes) if isinstance(n, Step)}, self.engines)
        self.secrets = frozenset().union(*(engine_secrets(config) for config in self.engines.values()))
        self.telemetry = _telemetry(self.secrets) if options.telemetry else None
        picked = Columns.parse(options.columns)
        self.rows = open_rows(inputs, picked, media_root=options.media_root)
        identity = {
            "chain": graph.fingerprint(chain.nodes),
            "inputs": fingerprint(inputs, picked, options.id_column),
            "nodes": graph.node_fingerprints(chain.nodes),
        }
        root = _default_output_dir(chain.name) if options.output_dir is None else options.output_dir
        self.target: RemoteOutput | None = None
        if is_url(root):
            self.target = RemoteOutput(str(root), {**identity, "format": options.output_format}, overwrite=options.overwrite)
            root = self.target.staging
        self.run_dir = RunDir(root, identity, overwrite=options.overwrite, output_format=options.output_format)

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the run directory: another run may use it from now on (a staging folder uploaded whole is removed)."""
        self.run_dir.close()
        if self.target is not None:
            self.target.clean()

    async def execute(self, make_executor: MakeExecutor = Executor) -> RunResult:
        """Run the chain's nodes over the rows in the run directory; run.json records how the session ended.
        `make_executor` is how the nodes run: the core's own `Executor`, or a runner's subclass of it that runs them
        elsewhere and commits what they decided into the run directory (chainette-ray)."""
        chain, options, run_dir = self.chain, self.options, self.run_dir
        run_dir.write_json(GRAPH_FILE, chain.describe())
        secrets = self.secrets
        reporter = options.reporter
        bus = EventBus([reporter] if reporter else [], secrets)
        run = make_executor(chain.nodes, run_dir, self.engines, options, bus)
        if self.telemetry is not None:
            run.pool.telemetry = self.telemetry
            bus.listeners.append(self.telemetry)
        budget = None if options.max_cost is None else Budget(options.max_cost, run.stats, run.prices, run.control)
        status, error = "failed", None
        outline = [{"id": INPUT_ID, "kind": "input", "label": "input"}, *graph.outline(chain.nodes)]
        bus.emit(RunStarted(chain=chain.name, output_dir=str(run_dir.root), resumed=run_dir.resumed, nodes=outline))
        ticker = asyncio.ensure_future(_tick(run, getattr(reporter, "interval", 1.0))) if reporter else None
        try:
            with stop_on_signals(run.control):
                final = await run.execute(self.rows)
            run.write_flattened(final)
            run_dir.export_parquet([*chain.output_models(), FLATTENED])
            status = "limited" if run.limited else "completed"
        except BaseException as exc:
            over_budget = budget is not None and budget.reached
            if run.control.stopping or isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                status = "budget_reached" if over_budget else "interrupted"
            else:
                error = f"{type(exc).__name__}: {exc}"
            if run.control.stopping:
                stopped = budget.interrupted() if budget is not None and over_budget else run.control.interrupted()
                raise with_resume_hint(stopped, run.control, run_dir.root) from None
            raise
        finally:
            if ticker is not None:
                ticker.cancel()
            sessions = run.save_session(status)
            summary = {
                "chain": chain.name,
                "status": status,
                "error": error,
                "resumed": run_dir.resumed,
                "limit": options.limit,
                "started_at": sessions[0]["started_at"],
                "finished_at": sessions[-1]["finished_at"],
                "seconds": round(sum(session["seconds"] for session in sessions), 3),
                "budget": None if budget is None else budget.record(),
                **run.summary(),
                "sessions": sessions,
                "versions": _versions(self.engines),
            }
            recorded = redact_data(summary, secrets)
            run_dir.write_json(RUN_FILE, recorded)
            bus.emit(RunFinished(status=status, summary=summary))
            if self.target is not None and status != "failed":
                self.target.upload(run_dir.root, status)
        if self.target is not None:
            return self.target.result(recorded, chain.output_models())
        return RunResult(run_dir.root, chain.output_models())


def _telemetry(secrets: frozenset[str]) -> Telemetry:
    """The run's OpenTelemetry spans and metrics (chainette.telemetry, imported only for a run that asks for them)."""
    try:
        from chainette.telemetry import Telemetry
    except ImportError:
        raise ConfigError('Telemetry needs opentelemetry-api, which is not installed: pip install "chainette-core[otel]".') from None
    return Telemetry(secrets)


async def _tick(run: Executor, interval: float) -> None:
    """Send a Progress snapshot of every node every `interval` seconds."""
    while True:
        await asyncio.sleep(interval)
        summary = run.summary()["steps"]
        run.bus.emit(Progress(nodes=summary))


def _default_output_dir(name: str) -> Path:
    return Path("chainette-runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


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


def _check_input_media(nodes: list[Node], engines: dict[str, EngineConfig[EngineOptions]], chain_input: type[BaseModel] | None) -> None:
    """Let each step's backend refuse, before any request, media its user prompt places that the engine cannot take
    (the ConfigError then names the step). A backend that implements no `check_input_media` hook takes no media: it
    was written for text messages only."""
    for node in graph.iter_nodes(nodes):
        if isinstance(node, Step):
            fields = placed_media(node, chain_input)
            if not fields:
                continue
            config = engines[node.engine_name]
            hooks = get_plugins().hooks(config.backend)
            try:
                if not hooks.implements("check_input_media"):
                    field = next(iter(fields))
                    raise ConfigError(
                        f"field '{field}' is media, and backend '{config.backend}' (engine '{config.name}') does not say it can send media "
                        "(it implements no check_input_media hook). Use a backend that does (openai, vllm, ollama), or leave the field out of the prompt."
                    )
                hooks.check_input_media(config, fields)
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
