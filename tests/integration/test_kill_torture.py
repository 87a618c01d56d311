"""SIGKILL from outside at random instants, then the same command again, over a chain with every node kind:
after each kill the commits are covered by the outputs, and the resumed run ends with every row exactly once
and results equal to an uninterrupted run's. Each kill notes which nodes the killed session had active; with
STREAMING, some kill of each trial must have found two of them in sequence (a node and one downstream of it), so
that the kills are known to land while rows stream between nodes. CHAINETTE_SOAK=N runs N times as many trials."""

from __future__ import annotations

import os
from pathlib import Path
import random
import shutil
import subprocess
import sys
import time

import pytest

from chainette.outcome import EXIT_SOME_ROWS_FAILED

from .invariants import (
    active_nodes,
    assert_commits_covered,
    assert_every_row_once,
    chain_file,
    environment,
    frontier_sizes,
    longest_in_sequence,
    snapshot,
    write_inputs,
)

ROWS = 2000
LATENCY = 0.002
KILLS_PER_TRIAL = 6
SOAK = int(os.environ.get("CHAINETTE_SOAK", "1"))
STREAMING = True
"""Whether rows stream between nodes (issue 25), so that a kill can find a node and one downstream of it both
active. Without streaming no kill can: sibling branches of a group run at once, but no node starts before the one
it reads from is done."""


def command(inputs: Path, out: Path, output_format: str) -> list[str]:
    return [sys.executable, "-m", "chainette", "run", chain_file(), "-i", str(inputs), "-o", str(out), "--format", output_format, "-q"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run per output format, with how long it took."""
    root = tmp_path_factory.mktemp("reference")
    inputs = root / "in.jsonl"
    write_inputs(inputs, ROWS)
    runs = {}
    for output_format in ("jsonl", "parquet"):
        out = root / output_format
        started = time.monotonic()
        done = subprocess.run(command(inputs, out, output_format), env=environment(LATENCY), capture_output=True, text=True, timeout=300)
        assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
        runs[output_format] = (snapshot(out), time.monotonic() - started)
    return inputs, runs


@pytest.mark.parametrize("seed", range(3 * SOAK))
@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_random_kills_then_resume(reference, tmp_path, output_format, seed):
    if output_format == "parquet":
        pytest.importorskip("pyarrow")
    inputs, runs = reference
    expected, duration = runs[output_format]
    rng = random.Random(f"{output_format}-{seed}")
    out = tmp_path / "out"
    sizes = frontier_sizes(out)
    active_at_kills: list[set[str]] = []
    for _ in range(KILLS_PER_TRIAL):
        process = subprocess.Popen(
            command(inputs, out, output_format), env=environment(LATENCY), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.2, duration * 0.8))
        process.kill()
        _, stderr = process.communicate()
        assert process.returncode in (EXIT_SOME_ROWS_FAILED, -9), stderr.decode()
        if out.exists():
            assert_commits_covered(out, output_format)
        if process.returncode == -9:
            active_at_kills.append(active_nodes(out, sizes))
        if process.returncode == EXIT_SOME_ROWS_FAILED:
            shutil.rmtree(out)
        sizes = frontier_sizes(out)
    done = subprocess.run(command(inputs, out, output_format), env=environment(LATENCY), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected, "the resumed run's results differ from an uninterrupted run's"
    if STREAMING:
        in_sequence = [longest_in_sequence(active) for active in active_at_kills]
        assert max(in_sequence, default=0) >= 2, f"no kill found two nodes in sequence active; active at each kill: {active_at_kills}"
