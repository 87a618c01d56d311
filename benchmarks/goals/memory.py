"""Goal 3: peak RSS of a two-step fake run over many rows stays under 300 MB (against the same run over 1,000
rows), and so does a rerun of those rows answered wholly from the response cache (against the run that filled
it). Each run is a process of its own (benchmarks/memory_probe.py)."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys
import tempfile

from harness import HERE, Figure, Outcome, fresh_cache, write_inputs

BASELINE_ROWS = 1_000
LIMIT_MB = 300


def measure(count: int) -> Outcome:
    """Peak RSS in MB of runs over `count` rows: the one filling an empty cache, and its fully cached rerun."""
    with tempfile.TemporaryDirectory() as folder:
        small, large = Path(folder) / "in-small.jsonl", Path(folder) / "in-large.jsonl"
        write_inputs(small, BASELINE_ROWS)
        write_inputs(large, count)
        with fresh_cache():
            baseline = peak_mb(small, Path(folder) / "out-small", cached=0)
        with fresh_cache():
            filling = peak_mb(large, Path(folder) / "out-fill", cached=0)
            rerun = peak_mb(large, Path(folder) / "out-rerun", cached=count)
    goal = f"< {LIMIT_MB} MB"
    return Outcome(
        (
            Figure(
                f"3. peak RSS, {count:,} rows, two steps (baseline: {BASELINE_ROWS:,} rows)",
                filling,
                baseline,
                goal,
                filling < LIMIT_MB,
                unit="MB",
            ),
            Figure(
                f"3. peak RSS, fully cached rerun of those {count:,} rows (baseline: the run that filled the cache)",
                rerun,
                filling,
                goal,
                rerun < LIMIT_MB,
                unit="MB",
            ),
        )
    )


def peak_mb(inputs: Path, output: Path, cached: int) -> float:
    """The peak RSS in MB of a probe process running the two fake steps over `inputs`, of whose second step's rows
    the response cache must have answered `cached`."""
    probe = [sys.executable, str(HERE / "memory_probe.py"), str(inputs), str(output)]
    done = subprocess.run(probe, capture_output=True, text=True, check=True)
    answered, rss = (int(word) for word in done.stdout.split()[-2:])
    assert answered == cached, f"{answered} of the second step's rows came from the cache, not {cached}"
    return rss / 1024
