"""Chain: the user's steps wired into a graph, checked when built; `run` hands a run of it to a session (chainette.run)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from chainette import graph
from chainette.nodes import Node, Step
from chainette.run.options import RunOptions

if TYPE_CHECKING:
    from chainette.cache import CacheSetting
    from chainette.engines import EngineConfig, EngineOptions
    from chainette.events import Listener
    from chainette.inputs import ColumnSpec, Inputs
    from chainette.results import RunResult


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
        from chainette.engines import get_engine  # declaring a chain loads no plugin machinery; using its engines does

        return {name: get_engine(name) for name in names}

    def describe(self) -> dict[str, Any]:
        """The graph as plain data, without secrets (what graph.json holds), with the segments its nodes run in."""
        from chainette.execution.segments import describe_segments

        configs = self.engines()
        engines = {name: config.public_dict() for name, config in configs.items()}
        return {"chain": self.name, **graph.describe(self.nodes, engines), "segments": describe_segments(self.nodes, configs)}

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
        on: str | None = None,
        telemetry: bool = False,
        max_cost: float | None = None,
        media_root: str | os.PathLike[str] | None = None,
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
        `on` runs the chain with a runner plugin instead of here: "ray" or "ray://HOST:PORT" with chainette-ray (docs/ray.md).
        `telemetry` sends OpenTelemetry spans and metrics for the run, its nodes and requests (docs/telemetry.md).
        `max_cost` (USD) stops the run gracefully, resumable, once what this call spent, its requests in flight included,
        reaches it (RunInterrupted, exit status 4; every step's engine needs a price; docs/running.md).
        `media_root`: the folder relative media paths of rows given in Python are read from (default: the current
        directory; a file's rows read them from the file's folder).
        Works inside a running event loop too (Jupyter): the run then happens on a worker thread.
        """
        if reporter is None and (progress if progress is not None else _interactive()):
            from chainette.ui.live import LiveView

            reporter = LiveView()
        options = RunOptions(
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
            on=on,
            telemetry=telemetry,
            max_cost=max_cost,
            media_root=media_root,
        )
        from chainette.run import session  # declaring a chain loads no plugin machinery; running it does

        return session.run_blocking(self, inputs, options)

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
        on: str | None = None,
        telemetry: bool = False,
        max_cost: float | None = None,
        media_root: str | os.PathLike[str] | None = None,
    ) -> RunResult:
        """Async form of `run` (no live view unless a `reporter` is given)."""
        options = RunOptions(
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
            on=on,
            telemetry=telemetry,
            max_cost=max_cost,
            media_root=media_root,
        )
        from chainette.run import session

        return await session.run(self, inputs, options)

    def output_models(self) -> dict[str, type[BaseModel] | None]:
        """The output model of each node whose outputs the run directory keeps, by node id."""
        return {n.id: n.output_model for n in graph.iter_nodes(self.nodes) if n.yield_output}


def _interactive() -> bool:
    """Whether a live view makes sense: a terminal, or a Jupyter kernel."""
    if sys.stdout.isatty():
        return True
    return "ipykernel" in sys.modules
