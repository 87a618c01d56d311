"""The Ray runner: opens the run directory as a local run does (its lock, identity, resume check, graph.json: the core's
run session), connects to the cluster (or starts a local one, stopped when the run ends however it ends), and executes
the session with the driver's executor (chainette_ray.driver)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
import logging
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chainette.errors import ChainetteError, ConfigError
from chainette.run.session import RunSession
from chainette_ray.target import Target

if TYPE_CHECKING:
    from chainette.chain import Chain
    from chainette.inputs import Inputs
    from chainette.results import RunResult
    from chainette.run.options import RunOptions


CLIENT_PORT = 10001
CONNECT_SECONDS = 5.0
CONNECT_TRIES = 3


class RayRunner:
    """Runs a chain on the Ray cluster `target` names (chainette.run.runner.Runner)."""

    def __init__(self, target: Target):
        self.target = target

    def run(self, chain: Chain, inputs: Inputs, options: RunOptions) -> RunResult:
        """Run `chain` over `inputs` on the cluster into `options.output_dir`, as `Chain.run` does here."""
        if options.batch:
            raise ConfigError(
                f"--batch cannot be combined with --on {self.target.text}: batch jobs run from one process. Leave out one of them."
            )
        from chainette_ray.driver import RayExecutor
        from chainette_ray.shipping import ship_by_value

        _check_same_cluster(self.target)
        _check_reachable(self.target)
        with RunSession(chain, inputs, options) as session, connected(self.target) as started:
            if not started:
                ship_by_value(chain.nodes)
            return _blocking(session.execute(partial(RayExecutor, target=self.target)))


def _check_reachable(target: Target) -> None:
    """Refuse at once, before the run directory is opened, a `ray://HOST:PORT` nothing answers at (Ray's client would
    retry for half a minute)."""
    parts = urlsplit(target.address or "")
    if parts.scheme != "ray" or parts.hostname is None:
        return
    port = parts.port or CLIENT_PORT
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ChainetteError(
            f"--on {target.text}: nothing answers at {parts.hostname}:{port} ({exc.strerror or exc}). Check the address of the Ray "
            "cluster's client port (10001 by default, `ray start --head` prints it) and that it is reachable from here, or use --on ray "
            "to start a local cluster."
        ) from None


@contextmanager
def connected(target: Target) -> Iterator[bool]:
    """Connected to the target's cluster within the block, yielding whether the run started that cluster itself; a
    local cluster started here is stopped at its end, on an error, Ctrl-C or SIGTERM too (SIGTERM is a KeyboardInterrupt
    outside the run's own signal handling). A connection this process made before (`ray.init`) is used and left open."""
    import ray

    if ray.is_initialized():
        yield False
        return
    with _terminate_interrupts():
        try:
            _init(target)
            yield target.starts_cluster
        finally:
            ray.shutdown()


def _check_same_cluster(target: Target) -> None:
    """Refuse a `ray://` address while this process is connected to a cluster already: the run would not go there."""
    import ray

    if ray.is_initialized() and target.address is not None and target.address.startswith("ray://"):
        raise ConfigError(
            f'--on {target.text}: this process is connected to a Ray cluster already (ray.init). Use --on ray (on="ray") to run '
            "there, or call ray.shutdown() first."
        )


def _init(target: Target) -> None:
    """`ray.init` for the target, tried again (up to CONNECT_TRIES times in all) when Ray's client server reports that the
    per-client server it forks died at start-up (ConnectionAbortedError), which a loaded head node does now and then."""
    import ray

    address = "local" if target.starts_cluster else target.address
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **_driver_settings(target))
            return
        except ConnectionAbortedError as exc:
            ray.shutdown()
            if attempt == CONNECT_TRIES:
                raise _not_connected(target, address, exc) from None
            time.sleep(attempt)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise _not_connected(target, address, exc) from None


def _not_connected(target: Target, address: str | None, exc: Exception) -> ChainetteError:
    return ChainetteError(
        f"--on {target.text}: cannot connect to the Ray cluster at {address} ({type(exc).__name__}: {exc}). Check that the "
        "cluster runs and that its client port is reachable from here, or use --on ray to start a local one."
    )


def _driver_settings(target: Target) -> dict[str, Any]:
    """What `ray.init` takes besides the address: a local cluster's size; this process's `sys.path` for the workers to
    import the chain's modules from (where they share its files: not through Ray's client, `ray://`)."""
    if target.address is not None and target.address.startswith("ray://"):
        return {}
    import ray

    settings: dict[str, Any] = {"job_config": ray.job_config.JobConfig(code_search_path=[path for path in sys.path if path])}
    if target.starts_cluster:
        settings.update(num_cpus=target.num_cpus, include_dashboard=False)
    return settings


@contextmanager
def _terminate_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (in the main thread), so that the cluster is stopped in `finally`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _blocking(work: Any) -> RunResult:
    """Run the coroutine `work` to its end; inside a running event loop (Jupyter) on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        result: RunResult = asyncio.run(work)
        return result
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(asyncio.run, work).result()
    return result
