"""`--on ray` without RAY_ADDRESS starts a local cluster and stops it when the run ends: after a completed run and
after SIGTERM to the driver mid-run, no process the run started is left."""

from __future__ import annotations

from pathlib import Path
import signal
import subprocess
import sys
import time
import uuid

import pytest

from chainette.outcome import EXIT_SOME_ROWS_FAILED

from ..integration.invariants import chain_file, write_inputs
from .conftest import block_workers, environment, marked, wait_gone

pytestmark = pytest.mark.ray


def command(inputs: Path, out: Path) -> list[str]:
    on = "ray?num_cpus=2&block_rows=100"
    return [sys.executable, "-m", "chainette", "run", chain_file(), "-i", str(inputs), "-o", str(out), "-q", "--on", on]


def test_a_completed_run_stops_the_cluster_it_started(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 300)
    marker = uuid.uuid4().hex
    done = subprocess.run(command(inputs, tmp_path / "out"), env=environment(marker), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    assert (tmp_path / "out" / "run.json").exists()
    assert not wait_gone(marker), "the run left processes of its cluster behind"


def test_sigterm_mid_run_stops_the_cluster_it_started(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 2000)
    marker = uuid.uuid4().hex
    driver = subprocess.Popen(
        command(inputs, tmp_path / "out"), env=environment(marker, TORTURE_LATENCY="0.01"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not block_workers(marker) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert driver.poll() is None, "the run ended before a block started"
    assert len(marked(marker)) > 2, "the run started no cluster"
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 143, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert not wait_gone(marker), "the run left processes of its cluster behind"


def test_sigterm_while_the_cluster_starts_stops_it(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 300)
    marker = uuid.uuid4().hex
    driver = subprocess.Popen(command(inputs, tmp_path / "out"), env=environment(marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(marked(marker)) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert driver.poll() is None, "the run ended before its cluster started"
    driver.send_signal(signal.SIGTERM)
    driver.communicate(timeout=120)
    assert driver.returncode != 0
    assert not wait_gone(marker), "the run left processes of its cluster behind"
