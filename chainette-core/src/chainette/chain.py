"""Chain: the user's steps wired into a graph, checked when built, run over input rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
import os
from pathlib import Path
import signal
import threading
import time
from typing import Any

from pydantic import BaseModel

from chainette import graph, inputs
from chainette.engines import EngineConfig, get_engine
from chainette.errors import RunTerminated
from chainette.executor import Run
from chainette.nodes import Node, Parallel, Step
from chainette.plugins import get_plugins
from chainette.store import JsonlWriter, RunDir, RunResult, read_lines

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

    def run(self, inputs: Inputs, *, output_dir: str | os.PathLike[str] | None = None, overwrite: bool = False) -> RunResult:
        """Run the chain over `inputs` (a JSONL/JSON file path, or dicts/models) and return the result.

        Works inside a running event loop too (Jupyter): the run then happens on a worker thread.
        """
        coroutine = self.arun(inputs, output_dir=output_dir, overwrite=overwrite)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    async def arun(self, inputs: Inputs, *, output_dir: str | os.PathLike[str] | None = None, overwrite: bool = False) -> RunResult:
        """Async form of `run`."""
        engines = self.engines()
        run_dir = RunDir(output_dir or _default_output_dir(self.name), overwrite=overwrite)
        run_dir.write_json("graph.json", self.describe())
        run = Run(self.nodes, run_dir, engines)
        started, clock = _now(), time.perf_counter()
        status, error = "failed", None
        terminated: list[bool] = []
        try:
            with _cancel_on_sigterm(terminated):
                final = await run.execute(_rows(inputs))
            self._write_flattened(run_dir, final)
            status = "completed"
        except (KeyboardInterrupt, asyncio.CancelledError):
            status = "interrupted"
            if terminated:
                raise RunTerminated(f"Run of '{self.name}' stopped by SIGTERM; its engines were stopped.") from None
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            run_dir.write_json(
                "run.json",
                {
                    "chain": self.name,
                    "status": status,
                    "error": error,
                    "started_at": started,
                    "finished_at": _now(),
                    "seconds": round(time.perf_counter() - clock, 3),
                    **run.summary(),
                    "versions": _versions(engines),
                },
            )
            if status == "completed":
                run_dir.remove_state()
        return RunResult(run_dir.root, self._outputs())

    def _outputs(self) -> dict[str, type[BaseModel] | None]:
        return {n.id: n.output_model for n in graph.iter_nodes(self.nodes) if n.yield_output}

    def _write_flattened(self, run_dir: RunDir, final: Path) -> None:
        shown = {"chain_input", *self._outputs(), *_aliases(self.nodes)}
        writer = JsonlWriter(run_dir.root / "flattened")
        try:
            for record in read_lines(final):
                writer.write(_flatten(record, shown))
        finally:
            writer.close()


def _flatten(record: dict[str, Any], shown: set[str]) -> dict[str, Any]:
    line: dict[str, Any] = {"row_id": record["row_id"]}
    for key, value in record["ctx"].items():
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


@contextmanager
def _cancel_on_sigterm(terminated: list[bool]) -> Iterator[None]:
    """Turn SIGTERM into cancellation of the current task, so that the run unwinds and stops its engines.

    Appends True to `terminated` when SIGTERM arrives. Only in the main thread (signal handlers live there).
    """
    task = asyncio.current_task()
    if threading.current_thread() is not threading.main_thread() or task is None:
        yield
        return
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        terminated.append(True)
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _rows(source: Inputs) -> Iterable[inputs.RawRow]:
    if isinstance(source, (str, os.PathLike)):
        return inputs.read_file(source)
    return inputs.from_objects(source)


def _default_output_dir(name: str) -> Path:
    return Path("chainette-runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions(engines: dict[str, EngineConfig]) -> dict[str, str]:
    from chainette import __version__

    found = get_plugins().found
    versions = {"chainette-core": __version__}
    for config in engines.values():
        info = found[config.backend]
        versions[info.distribution] = info.version
    return versions
