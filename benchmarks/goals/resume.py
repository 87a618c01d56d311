"""Reported, no goal (issue 25 asks that a resume work as before, issue 26 for 100M-row jobs): what resuming costs. A
two-step fake-backend run stops with 1 % of its input left (`limit`), then the same command resumes it; the resume's
time against the first session's. A resume reads back the heads of what earlier sessions committed and writes the
flattened table for every row: its time grows with the whole run, not with the rows it has left."""

from __future__ import annotations

from pathlib import Path
import tempfile
import time

from chains import SECOND, two_fake_steps
from harness import Figure, Outcome, fresh_cache, write_inputs

LEFT = 0.01
"""The share of the input the resume has left."""


def measure(count: int) -> Outcome:
    """Seconds of a resume with `LEFT` of `count` rows left, against those of the session that stopped before them."""
    chain = two_fake_steps()
    left = max(1, int(count * LEFT))
    with tempfile.TemporaryDirectory() as folder, fresh_cache():
        inputs, output = Path(folder) / "in.jsonl", Path(folder) / "out"
        write_inputs(inputs, count)
        started = time.perf_counter()
        chain.run(inputs, output_dir=output, limit=count - left)
        first = time.perf_counter() - started
        started = time.perf_counter()
        answered = chain.run(inputs, output_dir=output).stats["steps"][SECOND]["ok"]
        resumed = time.perf_counter() - started
    assert answered == count, f"resume: {answered} of {count} rows answered over the two sessions"
    name = f"2. resume with {LEFT:.0%} of {count:,} rows left vs the session before it"
    return Outcome((Figure(name, resumed, first, "reported", True, unit="s", binding=False),))
