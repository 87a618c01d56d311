"""Goal 10 (issue 26): `--on ray` on one local cluster started for the goal (two CPUs). Against the same fake server as
the local goals, one block worker (a Ray actor, given two blocks at a time) reaches >= 0.9 of a local run of the same
chain; and on the fake-backend overhead path (`chains.two_fake_steps`), two block workers reach >= 1.6 x one (both cores
used). Both compare rates once
started: a run's time less that of a run of a few rows (on the fake backend, a block for each worker, so that both
workers have started), whose fixed cost is reported apart. Measurements take turns,
best of two; the response cache is off in every run (the cluster's workers would otherwise answer the second round from
the first's cache)."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from functools import partial
from importlib.util import find_spec
import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import tempfile
import time

from chainette import Chain

from chains import LABEL, SECOND, labelling, two_fake_steps
from harness import IN_FLIGHT, Figure, Outcome, best_of, server, write_inputs

LATENCY = 0.02
"""The fake server's answer time here, in seconds (the figure the first part of issue 26 was measured at)."""
CPUS = 2
START_SECONDS = 60.0
FEW = 20
"""Rows of the run that measures a run's fixed cost, on the fake server (one block)."""
BLOCK_ROWS = 1000
"""Input rows per block in the fake-backend runs (chainette-ray's default, named here)."""
FEW_BLOCKS = 2 * BLOCK_ROWS
"""Rows of the run that measures it on the fake backend: a block for each of two block workers, so that the fixed cost
includes starting both (the second starts while the first answers its block)."""
SETTINGS = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled"}
"""The environment of the cluster and of the runs: no usage report, no token (a loopback cluster of the goal's own)."""


def measure(requests: int, rows: int) -> Outcome:
    """Rates over `requests` rows to a fake server (local, ray with one block worker) and over `rows` rows of the fake
    backend (ray with one and with two block workers); a note and no figure when chainette-ray is not installed."""
    if find_spec("ray") is None or find_spec("chainette_ray") is None:
        return Outcome((), ("10. ray: skipped (chainette-ray is not installed: pip install chainette-ray)",))
    with tempfile.TemporaryDirectory() as folder, cluster(), server(LATENCY) as url:
        root = Path(folder)
        reviews, texts = root / "reviews.jsonl", root / "texts.jsonl"
        write_reviews(reviews, requests)
        write_inputs(texts, rows)
        few = root / "few.jsonl"
        write_inputs(few, FEW_BLOCKS)
        served, fake = labelling("vllm", f"{url}/v1", IN_FLIGHT), two_fake_steps()
        small = root / "small.jsonl"
        write_reviews(small, FEW)
        runs = {
            "local": (served, LABEL, reviews, requests, None),
            "local, few": (served, LABEL, small, FEW, None),
            "ray": (served, LABEL, reviews, requests, "ray?in_flight=1"),
            "ray, few": (served, LABEL, small, FEW, "ray?in_flight=1"),
            "one block": (fake, SECOND, texts, rows, f"ray?in_flight=1&block_rows={BLOCK_ROWS}"),
            "one block, few": (fake, SECOND, few, FEW_BLOCKS, f"ray?in_flight=1&block_rows={BLOCK_ROWS}"),
            "two blocks": (fake, SECOND, texts, rows, f"ray?in_flight=2&block_rows={BLOCK_ROWS}"),
            "two blocks, few": (fake, SECOND, few, FEW_BLOCKS, f"ray?in_flight=2&block_rows={BLOCK_ROWS}"),
        }
        best = best_of(2, {name: partial(fresh_rate, run) for name, run in runs.items()})
    seconds = {name: runs[name][3] / best[name] for name in runs}
    steady = {
        name: (runs[name][3] - runs[f"{name}, few"][3]) / max(seconds[name] - seconds[f"{name}, few"], 1e-9)
        for name in ("local", "ray", "one block", "two blocks")
    }
    fixed = seconds["ray, few"]
    return Outcome(
        (
            Figure(
                f"10. --on ray, 1 block worker vs local, once started ({requests:,} rows, {LATENCY * 1000:.0f} ms)",
                steady["ray"],
                steady["local"],
                ">= 0.9 x local",
                steady["ray"] >= 0.9 * steady["local"],
            ),
            Figure(
                f"10. --on ray, fake backend, 2 block workers vs 1, once started ({rows:,} rows)",
                steady["two blocks"],
                steady["one block"],
                ">= 1.6 x",
                steady["two blocks"] >= 1.6 * steady["one block"],
            ),
        ),
        (
            f"10. once started: the rate of the rows after the first {FEW} on the fake server, {FEW_BLOCKS:,} on the fake backend "
            "(a run's time less that of a run of that many rows). "
            f"A ray run of {FEW} rows (connect, start a block worker, answer, stop) takes {fixed:.2f} s; whole runs: ray {best['ray']:,.0f} rows/s vs local {best['local']:,.0f}, "
            f"two blocks {best['two blocks']:,.0f} vs one {best['one block']:,.0f}",
        ),
    )


def fresh_rate(run: tuple[Chain, str, Path, int, str | None]) -> float:
    """`rate` of a run into a new output folder."""
    chain, last, inputs, count, on = run
    return rate(chain, last, inputs, inputs.parent / f"out-{time.monotonic_ns()}", count, on)


def rate(chain: Chain, last: str, inputs: Path, output: Path, count: int, on: str | None) -> float:
    """rows/s of a run of `chain` over the `count` rows of `inputs` (locally, or `on` the cluster, in blocks of the
    default size), with no response cache; every row must be answered by its last step, `last`."""
    started = time.perf_counter()
    result = chain.run(inputs, output_dir=output, cache=False, on=on)
    elapsed = time.perf_counter() - started
    answered = result.stats["steps"][last]["ok"]
    assert answered == count, f"{chain.name} on {on or 'this machine'}: {answered} of {count} rows answered"
    return count / elapsed


def write_reviews(path: Path, count: int) -> None:
    """A JSONL file of `count` rows `{"index": i}`, the input of the chains on a fake server."""
    with open(path, "w") as file:
        for index in range(count):
            file.write(json.dumps({"index": index}) + "\n")


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """A local Ray cluster of `CPUS` CPUs for the whole goal (`ray start --head`), which `--on ray` connects to through
    RAY_ADDRESS (and SETTINGS) within the block; its workers inherit this process's environment (its response cache folder). Stopped
    at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    address = f"127.0.0.1:{port}"
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, **SETTINGS}
    args = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={CPUS}"]
    head = subprocess.Popen(
        [*args, "--include-dashboard=false", "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    settings = {**SETTINGS, "RAY_ADDRESS": address}
    before = {name: os.environ.get(name) for name in settings}
    try:
        deadline = time.monotonic() + START_SECONDS
        while subprocess.run([ray, "status", f"--address={address}"], env=env, capture_output=True).returncode != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark's Ray cluster did not start")
            time.sleep(0.5)
        os.environ.update(settings)
        yield address
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        head.terminate()  # `ray start --block` stops the cluster's processes on SIGTERM, which takes a while
        head.wait(START_SECONDS)
