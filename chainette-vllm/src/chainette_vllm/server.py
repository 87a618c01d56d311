"""The `vllm serve` process manager: start, share, reuse and stop vLLM servers for engines without an endpoint.

- `ensure_running` / `release` back the `ensure_running` / `stop_engine` hooks. Servers this process
  starts are kept in a registry by server key with a count of the engines using them, and stopped
  when the count drops to zero (or at interpreter exit, as a safety net).
- A server runs in its own process group (`start_new_session`), bound to 127.0.0.1, with its output
  in a log file; it is ready when `GET /health` answers 200. Stopping sends SIGTERM to the group,
  waits `STOP_GRACE` seconds for the server to exit, then SIGKILLs the group.
- `warm_up` starts servers that outlive this process and records them in a state file
  (`$CHAINETTE_STATE_DIR/vllm-servers.json`); later runs reuse a recorded server with the same key.
  `stop_warm` and `list_warm` back `chainette kill` and `chainette ps`.

The API key reaches the server as the VLLM_API_KEY environment variable, never on the command line,
so the commands shown in errors, logs and `chainette ps` hold no secret. `extra_env` values are secrets
too (SecretStr): they reach only the server's environment, and the log lines an error quotes have the
engine's secrets redacted.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
import hashlib
import json
import os
from pathlib import Path
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Any
import warnings

import httpx2

from chainette.engines import EngineConfig, public_url
from chainette.errors import ConfigError, EngineError
from chainette.secrets import engine_secrets, redact
from chainette_vllm import API_KEY_ENV, SERVE_FLAGS, SERVE_OPTIONS

HOST = "127.0.0.1"
STOP_GRACE = 30.0  # seconds a server gets to exit after SIGTERM before its process group is killed
KILL_WAIT = 5.0  # seconds to wait for the group to disappear after SIGKILL
HEALTH_INTERVAL = 0.25
LOG_TAIL_LINES = 20
STATE_FILE = "vllm-servers.json"
# Substring of the lower-cased model name -> the reasoning parser enable_reasoning=True picks.
REASONING_PARSERS = (("deepseek-r1", "deepseek_r1"), ("deepseek_r1", "deepseek_r1"), ("qwen3", "qwen3"), ("granite", "granite"))


# ---------------------------------------------------------------- what to start


@dataclass(frozen=True)
class ServeSpec:
    """Everything that decides which server an engine needs: engines with equal specs share one."""

    engine: str
    model: str
    flags: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    api_key: str | None = field(repr=False)
    port: int | None
    startup_timeout: float
    secrets: frozenset[str] = field(repr=False)  # redacted from the log lines errors quote

    @property
    def key(self) -> str:
        """A stable name for the server: a hash of the model and of every option that changes the server."""
        identity = {"model": self.model, "flags": self.flags, "env": self.env, "port": self.port, "api_key": self.api_key}
        return "vllm-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def command(self, executable: str, port: int) -> list[str]:
        return [executable, "serve", self.model, "--host", HOST, "--port", str(port), *self.flags]

    def shown(self, command: list[str]) -> str:
        """The command as a shell line, with CUDA_VISIBLE_DEVICES when set (never the key or extra_env values)."""
        devices = self.env.get("CUDA_VISIBLE_DEVICES")
        prefix = f"CUDA_VISIBLE_DEVICES={shlex.quote(devices)} " if devices is not None else ""
        return prefix + shlex.join(command)

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, without a VLLM_API_KEY unless the engine has a key, plus `env`."""
        env = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        env.update(self.env)
        return env


def serve_spec(config: EngineConfig) -> ServeSpec:
    """The server an engine without an endpoint needs; ConfigError when enable_reasoning cannot pick a parser."""
    options = config.options
    values = {option: getattr(options, option) for option in SERVE_FLAGS}
    values["reasoning_parser"] = reasoning_parser(config)
    flags = [part for option, flag in SERVE_FLAGS.items() if values[option] is not None for part in (flag, str(values[option]))]
    env = {}
    if options.gpu_ids is not None:
        gpu_ids = options.gpu_ids
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids if isinstance(gpu_ids, str) else ",".join(map(str, gpu_ids))
    env.update({name: value.get_secret_value() for name, value in options.extra_env.items()})
    return ServeSpec(
        engine=config.name,
        model=config.model,
        flags=(*flags, *options.extra_serve_flags),
        env=env,
        api_key=config.resolve_api_key(default_env=API_KEY_ENV),
        port=options.port,
        startup_timeout=options.startup_timeout,
        secrets=engine_secrets(config, default_env=API_KEY_ENV),
    )


def reasoning_parser(config: EngineConfig) -> str | None:
    """`reasoning_parser`, else (with enable_reasoning=True) the parser that fits the model's name."""
    options = config.options
    if options.reasoning_parser or not options.enable_reasoning:
        return options.reasoning_parser
    name = config.model.lower()
    for pattern, parser in REASONING_PARSERS:
        if pattern in name:
            return parser
    raise ConfigError(
        f"Engine '{config.name}': enable_reasoning=True, but chainette does not know which reasoning parser fits "
        f"'{config.model}'. Set reasoning_parser= to the parser vLLM documents for this model (e.g. qwen3, deepseek_r1, granite)."
    )


# ---------------------------------------------------------------- servers used by this process


@dataclass
class Server:
    """A running `vllm serve` process group (its leader's pid is the group id)."""

    url: str
    pid: int
    command: str
    log: Path
    process: subprocess.Popen[bytes] | None = None  # None: started by another process (warmup)
    owned: bool = True  # stopped when its last engine is released
    users: int = 0


_servers: dict[str, Server] = {}
_lock = threading.Lock()


def ensure_running(config: EngineConfig, run_dir: Path | None, cancelled: threading.Event | None = None) -> str:
    """The base URL for the engine: its checked endpoint, a server this process or `warmup` started, or a new one.

    Setting `cancelled` while a new server loads stops it and raises EngineError.
    """
    if config.endpoint:
        return check_endpoint(config)
    spec = serve_spec(config)
    with _lock:
        server = _servers.get(spec.key) or _warm_server(spec.key) or spawn(spec, log_dir(run_dir), cancelled=cancelled)
        server.users += 1
        _servers[spec.key] = server
    return server.url


def release(config: EngineConfig) -> None:
    """One engine is done with its server: stop the server when no engine of this process uses it and it is ours."""
    key = serve_spec(config).key
    with _lock:
        server = _servers.get(key)
        if server is None:
            return
        server.users -= 1
        if server.users > 0:
            return
        del _servers[key]
        if server.owned:
            stop_group(server.pid, server.process)


@atexit.register
def _stop_owned_servers() -> None:
    """Safety net: stop every server this process started and still holds (e.g. when cleanup was interrupted)."""
    with _lock:
        owned = [server for server in _servers.values() if server.owned]
        _servers.clear()
    for server in owned:
        stop_group(server.pid, server.process)


def log_dir(run_dir: Path | None) -> Path:
    """Where server logs go: the run's `logs/` folder, or the state folder's outside a run."""
    return (run_dir if run_dir is not None else state_dir()) / "logs"


# ---------------------------------------------------------------- starting and stopping


def spawn(spec: ServeSpec, logs: Path, *, owned: bool = True, cancelled: threading.Event | None = None) -> Server:
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
        out.write(f"# {_now()} chainette started: {shown}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=spec.environment(), start_new_session=True
        )
    server = Server(url=f"http://{HOST}:{port}/v1", pid=process.pid, command=shown, log=log, process=process, owned=owned)
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
        return sock.getsockname()[1]


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- an endpoint the user runs


def check_endpoint(config: EngineConfig) -> str:
    """The engine's endpoint, once `GET {endpoint}/models` lists its model; EngineError saying what is wrong otherwise."""
    assert config.endpoint is not None
    ignored = sorted(SERVE_OPTIONS & config.options.model_fields_set)
    if ignored:
        warnings.warn(
            f"Engine '{config.name}': {', '.join(ignored)} only apply to a server chainette starts; ignored because endpoint= is set.",
            stacklevel=2,
        )
    url = config.endpoint.rstrip("/")
    shown = public_url(url)
    key = config.resolve_api_key(default_env=API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx2.get(f"{url}/models", headers=headers, timeout=10.0)
    except httpx2.HTTPError as exc:
        raise EngineError(
            f"Engine '{config.name}': the vLLM endpoint {shown} does not answer ({type(exc).__name__}: {exc}). "
            "Start the server (see docs/vllm.md), fix endpoint=, or leave endpoint out so that chainette starts vLLM itself.",
            kind="unreachable",
        ) from None
    if response.status_code in (401, 403):
        raise EngineError(
            f"Engine '{config.name}': {shown}/models answered HTTP {response.status_code}. Check the engine's api_key or api_key_env "
            "against the server's key.",
            kind="authentication",
        )
    served = _served_models(response)
    if served is None:
        raise EngineError(
            f"Engine '{config.name}': {shown}/models answered HTTP {response.status_code} without a model list; "
            "endpoint= must be a vLLM server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.",
            kind="bad_endpoint",
        )
    wanted = config.options.served_model_name or config.model
    if wanted not in served:
        raise EngineError(
            f"Engine '{config.name}': the vLLM server at {shown} serves {', '.join(served) or 'no model'}, not '{wanted}'. "
            "Set model= (or served_model_name=) to the name it serves, or point endpoint= at the right server.",
            kind="not_found",
        )
    return config.endpoint


def _served_models(response: httpx2.Response) -> list[str] | None:
    if response.status_code != 200:
        return None
    try:
        data = response.json().get("data")
        return [str(model["id"]) for model in data]
    except (ValueError, AttributeError, TypeError, KeyError):
        return None


# ---------------------------------------------------------------- servers that outlive a run (warmup)


def state_dir() -> Path:
    """$CHAINETTE_STATE_DIR, else ~/.cache/chainette."""
    return Path(os.environ.get("CHAINETTE_STATE_DIR") or Path.home() / ".cache" / "chainette")


def warm_up(config: EngineConfig) -> str:
    """Start (or find running) the server for `config` so that it outlives this process, record it, return its URL."""
    spec = serve_spec(config)
    server = _warm_server(spec.key) or spawn(spec, log_dir(None), owned=False)
    with _state() as entries:
        if not any(e["engine"] == config.name and e["pid"] == server.pid for e in entries):
            entries.append(
                {
                    "engine": config.name,
                    "model": config.model,
                    "key": spec.key,
                    "url": server.url,
                    "pid": server.pid,
                    "started_at": _now(),
                    "log": str(server.log),
                    "command": server.command,
                }
            )
    return server.url


def stop_warm(names: list[str] | None) -> list[dict[str, Any]]:
    """Stop the warm servers of the engines `names` (None: all) and forget them; return the entries removed."""
    with _state() as entries:
        if names is not None:
            unknown = sorted(set(names) - {e["engine"] for e in entries})
            if unknown:
                known = ", ".join(sorted({e["engine"] for e in entries})) or "none"
                raise ConfigError(f"No server started by warmup for {', '.join(unknown)} (warm engines: {known}). See `chainette ps`.")
        pids = {e["pid"] for e in entries if names is None or e["engine"] in names}
        for pid in sorted(pids):
            stop_group(pid)
        removed = [e for e in entries if e["pid"] in pids]
        entries[:] = [e for e in entries if e["pid"] not in pids]
    return removed


def list_warm() -> list[dict[str, Any]]:
    """The recorded warm servers that are still running (dead ones are forgotten)."""
    with _state() as entries:
        entries[:] = [e for e in entries if group_alive(e["pid"])]
        return list(entries)


def _warm_server(key: str) -> Server | None:
    """A server `warmup` started for `key` that is running and healthy, as a Server this process does not own."""
    with httpx2.Client(timeout=2.0, trust_env=False) as http:
        for entry in _read_state():
            if entry["key"] == key and group_alive(entry["pid"]) and healthy(http, entry["url"]):
                return Server(url=entry["url"], pid=entry["pid"], command=entry["command"], log=Path(entry["log"]), owned=False)
    return None


@contextmanager
def _state() -> Iterator[list[dict[str, Any]]]:
    """The state file's entries, locked against other chainette processes, written back when the block succeeds."""
    import fcntl  # POSIX only, like starting servers; an endpoint engine works without it

    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{STATE_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = _read_state()
        yield entries
        temporary = folder / f"{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, folder / STATE_FILE)


def _read_state() -> list[dict[str, Any]]:
    path = state_dir() / STATE_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read {path} ({exc}). Delete it; servers it listed keep running until you stop them (their pids are in the file)."
        ) from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path} is not a list of servers. Delete it; servers it listed keep running until you stop them.")
    return entries
