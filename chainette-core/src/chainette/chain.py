"""Chain: the user's steps wired into a graph, checked when built, run over input rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
import hashlib
import json
import os
from pathlib import Path
import shutil
import signal
import sys
import threading
from typing import Any

from pydantic import BaseModel

from chainette import graph, inputs
from chainette.engines import EngineConfig, get_engine
from chainette.errors import RunInterrupted
from chainette.events import EventBus, Listener, Progress, RunFinished, RunStarted
from chainette.executor import Run
from chainette.frontier import rows as frontier_rows
from chainette.inputs import Columns, ColumnSpec, hf_source
from chainette.lifecycle import RunControl
from chainette.nodes import Node, Parallel, Step
from chainette.plugins import get_plugins
from chainette.secrets import engine_secrets, redact_data
from chainette.store import OutputFolder, RunDir, RunResult, Writer

Inputs = str | os.PathLike[str] | Iterable[dict[str, Any] | BaseModel]


class Chain:
    """A named pipeline. `steps` holds Step and apply nodes; a nested list is a group of parallel Branches."""

    def __init__(self, *, name: str, steps: list[Any]):
        self.name = name
        self.nodes: list[Node] = graph.normalize(steps)
        graph.check(self.nodes)

    @property
    def input_model(self) -> type[BaseModel] | None:
        return graph.input_model(self.nodes)

    def engines(self) -> dict[str, EngineConfig]:
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
        output_format: str = "jsonl",
        durable: bool = False,
    ) -> RunResult:
        """Run the chain over `inputs` (a JSONL, JSON, CSV or Parquet file, `hf:name[:config]:split`, or dicts/models).

        An `output_dir` holding an unfinished run of the same chain and inputs is resumed;
        `retry_errors` runs again the rows its errors file holds. `columns` picks and renames input
        fields ("text,label", "review=text,stars"); `output_format` is "jsonl" or "parquet". `durable` fsyncs every
        write, so that a power loss (not only a crash) loses no committed row. `progress` shows the live view
        (default: when in a terminal or a notebook); `reporter` receives every event instead.
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
            output_format=output_format,
            durable=durable,
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
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
        output_format: str = "jsonl",
        durable: bool = False,
    ) -> RunResult:
        """Async form of `run` (no live view unless a `reporter` is given)."""
        engines = self.engines()
        picked = Columns.parse(columns)
        rows = _rows(inputs, picked)
        identity = {"chain": graph.fingerprint(self.nodes), "inputs": input_fingerprint(inputs, picked)}
        run_dir = RunDir(output_dir or _default_output_dir(self.name), identity, overwrite=overwrite, output_format=output_format)
        run_dir.write_json("graph.json", self.describe())
        secrets = frozenset().union(*(engine_secrets(config) for config in engines.values()))
        bus = EventBus([reporter] if reporter else [], secrets)
        run = Run(self.nodes, run_dir, engines, retry_errors=retry_errors, durable=durable, bus=bus)
        status, error = "failed", None
        outline = [{"id": "chain_input", "kind": "input", "label": "input"}, *graph.outline(self.nodes)]
        bus.emit(RunStarted(chain=self.name, output_dir=str(run_dir.root), resumed=run_dir.resumed, nodes=outline))
        ticker = asyncio.ensure_future(_tick(run, getattr(reporter, "interval", 1.0))) if reporter else None
        try:
            with _stop_on_signals(run.control):
                final = await run.execute(rows)
            self._write_flattened(run_dir, final)
            run_dir.export_parquet([*self._outputs(), "flattened"])
            status = "completed"
        except BaseException as exc:
            if run.control.stopping or isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                status = "interrupted"
            else:
                error = f"{type(exc).__name__}: {exc}"
            if run.control.stopping:
                raise _with_resume_hint(run.control.interrupted(), run_dir) from None
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
                "started_at": sessions[0]["started_at"],
                "finished_at": sessions[-1]["finished_at"],
                "seconds": round(sum(session["seconds"] for session in sessions), 3),
                **run.summary(),
                "sessions": sessions,
                "versions": _versions(engines),
            }
            run_dir.write_json("run.json", redact_data(summary, secrets))
            bus.emit(RunFinished(status=status, summary=summary))
        return RunResult(run_dir.root, self._outputs())

    def _outputs(self) -> dict[str, type[BaseModel] | None]:
        return {n.id: n.output_model for n in graph.iter_nodes(self.nodes) if n.yield_output}

    def _write_flattened(self, run_dir: RunDir, final: Path) -> None:
        shown = {"chain_input", *self._outputs(), *_aliases(self.nodes)}
        folder = run_dir.node_folder("flattened")
        shutil.rmtree(folder, ignore_errors=True)
        writer = OutputFolder(Writer(), folder)
        try:
            for row in frontier_rows(final):
                writer.write(_flatten(row.row_id, row.ctx, shown))
        finally:
            writer.close()


def _flatten(row_id: str, ctx: dict[str, Any], shown: set[str]) -> dict[str, Any]:
    line: dict[str, Any] = {"row_id": row_id}
    for key, value in ctx.items():
        if key.endswith("_reasoning") and key[: -len("_reasoning")] in shown:
            line[key] = value
        elif key not in shown:
            continue
        elif isinstance(value, dict):
            line.update({f"{key}.{field}": v for field, v in value.items()})
        else:
            line[key] = value
    return line


def _aliases(nodes: list[Node]) -> list[str]:
    return [b.alias for n in nodes if isinstance(n, Parallel) for b in n.branches if b.alias]


DRAIN_SECONDS = 30.0


async def _tick(run: Run, interval: float) -> None:
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


@contextmanager
def _stop_on_signals(control: RunControl) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: take no new rows, let those in flight finish (at most DRAIN_SECONDS).
    A second Ctrl-C cancels at once. Only in the main thread, where signal handlers live."""
    task = asyncio.current_task()
    if threading.current_thread() is not threading.main_thread() or task is None:
        yield
        return
    loop = asyncio.get_running_loop()

    def on_signal(reason: str, exit_code: int) -> None:
        if control.stopping:
            task.cancel()
            return
        control.stop(reason, exit_code)
        loop.call_later(DRAIN_SECONDS, task.cancel)

    loop.add_signal_handler(signal.SIGINT, on_signal, "Interrupted (Ctrl-C)", 130)
    loop.add_signal_handler(signal.SIGTERM, on_signal, "Stopped by SIGTERM", 143)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def _with_resume_hint(error: RunInterrupted, run_dir: RunDir) -> RunInterrupted:
    message = (
        f"{error}: requests in flight were finished, engines stopped, and every finished row is saved in {run_dir.root}. "
        "Run the same command again (same chain, inputs and output directory) to resume."
    )
    return RunInterrupted(message, error.exit_code)


def input_fingerprint(source: Inputs, columns: Columns | None = None) -> str | None:
    """A hash of the inputs when they can be read twice (a file's bytes, a list, a dataset's name and split), with
    the columns picked; None for a one-shot iterator."""
    digest = hashlib.blake2b(digest_size=16)
    dataset = hf_source(source)
    if dataset is not None:
        digest.update(dataset.identity.encode())
    elif isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            return None
    elif isinstance(source, (list, tuple)):
        for row in source:
            data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
            digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    else:
        return None
    if columns is not None:
        digest.update(f"\0columns:{columns.describe()}".encode())
    return digest.hexdigest()


def _rows(source: Inputs, columns: Columns | None) -> Iterable[inputs.RawRow]:
    """The input rows; a file or dataset is opened now, so a missing file or column stops the run before it starts."""
    if isinstance(source, (str, os.PathLike)):
        return inputs.read_source(source, columns)
    return inputs.from_objects(source, columns)


def _default_output_dir(name: str) -> Path:
    return Path("chainette-runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _versions(engines: dict[str, EngineConfig]) -> dict[str, str]:
    from chainette import __version__

    found = get_plugins().found
    versions = {"chainette-core": __version__}
    for config in engines.values():
        info = found[config.backend]
        versions[info.distribution] = info.version
    return versions
