"""Goal 6: looking up and storing every request in the response cache costs a run kept at about 1,000 rows/s by
the server at most 5 % (an empty cache against none, rounds interleaved, best of three); and a rerun of the two
fake steps answered wholly from the cache keeps >= 10,000 rows/s (against the run that filled it)."""

from __future__ import annotations

from pathlib import Path
import tempfile

from chains import LABEL, labelling, two_fake_steps
from harness import IN_FLIGHT, Figure, Outcome, best_of, file_rate, fresh_cache, full_rate, server, write_inputs


def measure(requests: int, count: int) -> Outcome:
    """The cache's cost over `requests` rows on a fake server; the cached rerun's rate over `count` rows."""
    with server(IN_FLIGHT / 1000) as url:
        endpoint = f"{url}/v1"
        best = best_of(
            3,
            {
                "without": lambda: full_rate(labelling("vllm", endpoint, IN_FLIGHT), LABEL, requests, cache=False),
                "with": lambda: full_rate(labelling("vllm", endpoint, IN_FLIGHT), LABEL, requests, cache=True),
            },
        )
    chain = two_fake_steps()
    with tempfile.TemporaryDirectory() as folder, fresh_cache():
        inputs = Path(folder) / "in.jsonl"
        write_inputs(inputs, count)
        filling = file_rate(chain, inputs, Path(folder) / "fill", count)
        rerun = file_rate(chain, inputs, Path(folder) / "rerun", count, cached=count)
    return Outcome(
        (
            Figure(
                "6. cache lookups and stores at ~1,000 rows/s (vllm, fake server) vs no cache",
                best["with"],
                best["without"],
                ">= 95% of baseline",
                best["with"] >= 0.95 * best["without"],
            ),
            Figure(
                f"6. fully cached rerun, two steps, {count:,} rows vs the run that filled the cache",
                rerun,
                filling,
                ">= 10,000 rows/s",
                rerun >= 10_000,
            ),
        )
    )
