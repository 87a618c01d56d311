"""The vllm backend's batch client: each batch is a `vllm run-batch` process reading the batch file where it lies
and writing its answers beside it, started like `vllm serve` (the engine's model, flags and environment, its own
process group, the engine's log, tied to chainette) and stopped by `cancel` and `aclose`, on every way out of a run.

A batch id is `PID|IDENTITY|OUTPUT`: after a restart, a process that is gone has either written OUTPUT (completed)
or not (expired: its rows are asked again); chainette's processes end with it, so none is found running.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from chainette.batch import BatchStatus
from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import BackendError
from chainette.openai_format import parse_batch_result
from chainette_vllm.client import chat_payload, engine_fields, request_model
from chainette_vllm.options import VllmOptions
from chainette_vllm.process import Server, identity, launch_batch, log_excerpt, stop_group, sweep_ipc
from chainette_vllm.spec import serve_spec

ENDPOINT = "/v1/chat/completions"


class RunBatchClient:
    """`vllm run-batch` jobs for one engine without an endpoint; their logs go to `run_dir`/logs."""

    max_requests = 100_000
    detached = False
    max_bytes = 1024**3

    def __init__(self, config: EngineConfig[VllmOptions], run_dir: Path | None):
        self.engine = config.name
        self.spec = serve_spec(config)
        self.logs = (run_dir or Path.cwd()) / "logs"
        self.model, self.fields = request_model(config), engine_fields(config)
        self.jobs: dict[str, Server] = {}

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": chat_payload(self.model, self.fields, request)}

    async def upload(self, path: Path) -> str:
        return str(path)

    async def create(self, file_id: str) -> str:
        batch_file = Path(file_id)
        output = batch_file.with_name(batch_file.stem + ".answers.jsonl")
        job = launch_batch(self.spec, self.logs, batch_file, output)
        batch_id = f"{job.pid}|{identity(job.pid) or ''}|{output}"
        self.jobs[batch_id] = job
        return batch_id

    async def status(self, batch_id: str) -> BatchStatus:
        pid, started, output = batch_id.split("|", 2)
        job = self.jobs.get(batch_id)
        if job is None:
            if started and identity(int(pid)) == started:
                return BatchStatus("in_progress")
            return BatchStatus("completed", result_files=(output,)) if Path(output).exists() else BatchStatus("expired")
        ended = job.ended()
        if ended is None:
            return BatchStatus("in_progress")
        if job.process is not None and job.process.returncode:
            return BatchStatus("failed", detail=f"vllm run-batch (pid {job.pid}) {ended}. {log_excerpt(job, self.spec.secrets)}")
        return BatchStatus("completed", result_files=(output,))

    async def results(self, status: BatchStatus) -> list[tuple[str, Answer | BackendError]]:
        """The answers in the output files; a line cut short (a job killed while writing) is left out: asked again."""
        answered = []
        for name in status.result_files:
            for text in Path(name).read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                answered.append(parse_batch_result(line, engine=self.engine))
        return answered

    async def cancel(self, batch_id: str) -> None:
        job = self.jobs.get(batch_id)
        if job is not None:
            await asyncio.to_thread(stop_group, job.pid, job.process)

    async def aclose(self) -> None:
        """Stop every `vllm run-batch` this client started that still runs, and remove the IPC folders of those ended."""
        for job in self.jobs.values():
            if job.ended() is None:
                await asyncio.to_thread(stop_group, job.pid, job.process)
        sweep_ipc()
