"""Goal 9: adaptive concurrency (issue 29). A server that takes 16 requests at once and answers 429 (no Retry-After)
beyond them, asked by an engine of max_concurrency 64: adapting, the engine meets fewer 429s than with the window fixed
at 64, and answers at least as many rows a second (one round each, fixed first: the fixed window's 429 cool-downs make
it slow, and the gap is far above the machine's noise)."""

from __future__ import annotations

from pathlib import Path
import tempfile
import time

from chains import LABEL, labelling
from harness import LATENCY, Figure, Outcome, fresh_cache, server

CAPACITY = 16
CONCURRENCY = 64


def measure(count: int) -> Outcome:
    """The rate and the 429s of each setting over `count` rows, the fixed window first."""
    with server(LATENCY, CAPACITY, refuse=429) as url:
        fixed_rate, fixed_refused = run(url, count, adaptive=False)
        rate, refused = run(url, count, adaptive=True)
    return Outcome(
        (
            Figure(
                f"9. adaptive vs fixed window ({CONCURRENCY} on a server taking {CAPACITY}): 429s",
                refused,
                fixed_refused,
                "fewer",
                refused < fixed_refused,
                unit="429s",
            ),
            Figure("9. adaptive vs fixed window: rows answered a second", rate, fixed_rate, ">= the fixed window's", rate >= fixed_rate),
        )
    )


def run(url: str, count: int, adaptive: bool) -> tuple[float, int]:
    """rows/s answered over `count` rows, and the 429s met (each retried), with the engine's window adaptive or fixed."""
    chain = labelling("vllm", f"{url}/v1", CONCURRENCY, adaptive=adaptive)
    with tempfile.TemporaryDirectory() as folder, fresh_cache():
        started = time.perf_counter()
        result = chain.run([{"index": i} for i in range(count)], output_dir=Path(folder) / "out", cache=False, progress=False)
        elapsed = time.perf_counter() - started
        figures = result.stats["steps"][LABEL]
    return figures["ok"] / elapsed, figures["retries"]
