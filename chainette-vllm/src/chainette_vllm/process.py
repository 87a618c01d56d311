"""One `vllm serve` process group: start it for a ServeSpec, wait until it is healthy, stop it, quote its log.

`spawn` starts the server in its own process group (`start_new_session`), bound to 127.0.0.1, with its
output appended to a log file, and returns once `GET /health` answers 200; on any failure (the process
exits, `startup_timeout` runs out, `cancelled` is set) it stops the group and raises EngineError quoting
the log's last lines with the engine's secrets redacted. `stop_group` sends SIGTERM to the group, waits
`STOP_GRACE` seconds for all of it to exit, then SIGKILLs it, and returns once none of it is left.
Knows nothing of which servers are in use or recorded: see `chainette_vllm.server` and `chainette_vllm.warm`.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import threading
import time

import httpx2

from chainette.errors import EngineError
from chainette.secrets import redact
from chainette_vllm.spec import HOST, ServeSpec

STOP_GRACE = 30.0  # seconds a server gets to exit after SIGTERM before its process group is killed
KILL_WAIT = 5.0  # seconds to wait for the group to disappear after SIGKILL
HEALTH_INTERVAL = 0.25
LOG_TAIL_LINES = 20


@dataclass
class Server:
    """A running `vllm serve` process group (its leader's pid is the group id)."""

    url: str
    pid: int
    command: str
    log: Path
    process: subprocess.Popen[bytes] | None = None  # None: started by another process (warmup)


def spawn(spec: ServeSpec, logs: Path, *, cancelled: threading.Event | None = None) -> Server:
    """Start `vllm serve` for `spec` and wait until it is healthy; on any failure the process group is stopped."""
    executable = shutil.which("vllm")
    if executable is None:
        raise EngineError(
            f"Engine '{spec.engine}' has no endpoint, so chainette must start a vLLM server, but the `vllm` executable is not on PATH. "
            'Install it with `pip install "chainette-vllm[serve]"` (vLLM needs Python >= 3.11 and a GPU), '
            "or run vLLM yourself and set endpoint= (see docs/vllm.md).",
            kind="server_missing",
        )
    port = spec.port or free_port()
    command = spec.command(executable, port)
    shown = spec.shown(command)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"vllm-{spec.engine}.log"
    with open(log, "ab") as out:
        out.write(f"# {utc_now()} chainette started: {shown}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=spec.environment(), start_new_session=True
        )
    server = Server(url=f"http://{HOST}:{port}/v1", pid=process.pid, command=shown, log=log, process=process)
    try:
        wait_until_healthy(server, spec, cancelled or threading.Event())
    except BaseException:
        stop_group(server.pid, process)
        raise
    return server


def wait_until_healthy(server: Server, spec: ServeSpec, cancelled: threading.Event) -> None:
    """Poll `GET /health` until 200; EngineError (with the log's last lines) if the process exits, time runs out,
    or `cancelled` is set."""
    assert server.process is not None
    deadline = time.monotonic() + spec.startup_timeout
    with httpx2.Client(timeout=2.0, trust_env=False) as http:
        while True:
            status = server.process.poll()
            if status is not None:
                raise EngineError(
                    f"The vLLM server for engine '{spec.engine}' exited with status {status} before it was ready; "
                    f"fix the cause its log shows and run again. {_log_excerpt(server, spec.secrets)}",
                    kind="server_exited",
                )
            if healthy(http, server.url):
                return
            if cancelled.is_set():
                raise EngineError(
                    f"The start of the vLLM server for engine '{spec.engine}' was cancelled; it was stopped.", kind="cancelled"
                )
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"The vLLM server for engine '{spec.engine}' did not answer GET /health with 200 within "
                    f"{spec.startup_timeout:g} s, so it was stopped. If the model needs longer to load, raise the engine's "
                    f"startup_timeout. {_log_excerpt(server, spec.secrets)}",
                    kind="server_timeout",
                )
            time.sleep(HEALTH_INTERVAL)


def healthy(http: httpx2.Client, url: str) -> bool:
    """Whether the server whose base URL (ending in /v1) is `url` answers `GET /health` with 200."""
    try:
        return http.get(url.removesuffix("/v1") + "/health").status_code == 200
    except httpx2.HTTPError:
        return False


def stop_group(pgid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group `pgid` and wait up to STOP_GRACE s for all of it to exit, then SIGKILL what is left.

    Returns once no process of the group is left (zombies aside), so that its GPU memory is free.
    """
    for signum, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, KILL_WAIT)):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signum)
        deadline = time.monotonic() + wait
        while True:
            if process is not None:
                process.poll()  # reap the leader, our child
            if not group_alive(pgid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is running (zombies, which hold no memory, do not count where /proc tells them)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def utc_now() -> str:
    """The current UTC time, to the second, in ISO 8601 (log headers, the state file's `started_at`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _log_excerpt(server: Server, secrets: frozenset[str]) -> str:
    """The last lines of the server's log and its command, for an error message; `secrets` are redacted from them."""
    try:
        with open(server.log, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 64 * 1024, 0))
            lines = log.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        lines = []
    tail = redact("\n".join(f"    {line}" for line in lines), secrets) or "    (empty)"
    return f"Last lines of its log {server.log}:\n{tail}\nCommand: {server.command}"
