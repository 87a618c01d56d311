"""A small run crashed at its k-th write, for every k, then resumed: each ends equal to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

from chainette.outcome import EXIT_SOME_ROWS_FAILED

from .invariants import assert_every_row_once, chain_file, environment, snapshot, write_inputs

ROWS = 12


@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_crash_at_every_write_then_resume(tmp_path, output_format):
    if output_format == "parquet":
        pytest.importorskip("pyarrow")
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, ROWS, size=40)
    args = ["run", chain_file(), "-i", str(inputs), "-o", "OUT", "--format", output_format, "-q"]
    reference = [sys.executable, "-m", "chainette", *[str(tmp_path / "reference") if a == "OUT" else a for a in args]]
    assert subprocess.run(reference, env=environment(0), capture_output=True, timeout=60).returncode == EXIT_SOME_ROWS_FAILED
    expected = snapshot(tmp_path / "reference")

    harness = [sys.executable, str(Path(__file__).with_name("crash_at_every_write.py")), str(tmp_path / "crashes"), "--", *args]
    done = subprocess.run(harness, env=environment(0), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    writes = int(done.stdout)
    assert writes > 20, "the run should write more than this; is the crash hook reaching the store?"
    for k in range(1, writes + 1):
        out = tmp_path / "crashes" / str(k)
        assert_every_row_once(out, ROWS)
        assert snapshot(out) == expected, f"crashed at write {k} of {writes}, then resumed: results differ"
