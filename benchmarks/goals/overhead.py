"""Goal 2: chainette's own per-row cost, the fake backend with no latency over two steps, the response cache on, every
output written: >= 20,000 rows/s (issue 25; against plain json.loads + json.dumps of every row, no chainette); what
--durable's fsyncs cost on this disk: >= 50 % of the rate without (best of two, interleaved); reported, the rate with
the response cache off against the rate with it (what the cache's keys, look-ups and stores cost); and where the time
goes: the best run's CPU seconds, its own and the kernel's, and page faults (which a profile of Python calls does not
show), and a profile."""

from __future__ import annotations

import cProfile
import itertools
import json
from pathlib import Path
import pstats
import resource
import tempfile
import time

from chainette import Chain

from chains import two_fake_steps
from harness import Figure, Outcome, best_of, file_rate, fresh_cache, write_inputs

PROFILED_ROWS = 20_000
"""At most this many rows go through the profiled run (cProfile slows a run several times over)."""
AREAS = ("/chainette/", "/pydantic", "/asyncio/", "/jinja2/", "/json/")
"""Path markers of the areas the profile adds time up by; chainette's by module."""


def measure(count: int) -> Outcome:
    """The rates over `count` rows, and notes: what the best run with the cache on cost (CPU, page faults), and the
    share of own time per area in a profiled run."""
    chain = two_fake_steps()
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in.jsonl"
        write_inputs(inputs, count)
        outputs = (Path(folder) / f"out-{number}" for number in itertools.count())
        plain_runs: list[tuple[float, str]] = []  # each run with the cache on: its rate, and what it cost

        def rate(durable: bool = False, cache: bool = True) -> float:
            with fresh_cache():
                return file_rate(chain, inputs, next(outputs), count, durable=durable, cache=cache)

        def plain_run() -> float:
            before = resource.getrusage(resource.RUSAGE_SELF)
            plain_runs.append((rate(), costs(before, resource.getrusage(resource.RUSAGE_SELF))))
            return plain_runs[-1][0]

        best = best_of(
            2,
            {
                "plain": plain_run,
                "durable": lambda: rate(durable=True),
                "uncached": lambda: rate(cache=False),
                "json": lambda: read_write_rate(inputs, Path(folder) / "copy.jsonl"),
            },
        )
        profile = where_time_goes(chain, inputs, Path(folder) / "profiled", min(count, PROFILED_ROWS))
    plain, durable = best["plain"], best["durable"]
    return Outcome(
        (
            Figure(f"2. fake backend, two steps, {count:,} rows", plain, best["json"], ">= 20,000 rows/s", plain >= 20_000),
            Figure("2. the same with --durable (fsync per flush) vs without", durable, plain, ">= 50% of without", durable >= 0.5 * plain),
            Figure("2. the same with the response cache off vs on", best["uncached"], plain, "(what the cache costs)", True, binding=False),
        ),
        (max(plain_runs)[1], profile),
    )


def costs(before: resource.struct_rusage, after: resource.struct_rusage) -> str:
    """What a run cost the process between two readings: CPU seconds in its own code and in the kernel's (every
    thread's), and minor page faults (memory the kernel had to map: a heap that grows and shrinks shows here)."""
    return (
        f"The best run above (cache on): {after.ru_utime - before.ru_utime:.2f} s of CPU in the process, "
        f"{after.ru_stime - before.ru_stime:.2f} s in the kernel, {after.ru_minflt - before.ru_minflt:,} page faults."
    )


def read_write_rate(inputs: Path, copy: Path) -> float:
    """Baseline: plain json.loads + json.dumps of every row, twice (one per step), no chainette."""
    started = time.perf_counter()
    count = 0
    with open(inputs) as source, open(copy, "w") as target:
        for line in source:
            row = json.loads(line)
            for _ in range(2):
                target.write(json.dumps({**row, "label": "x", "score": 0.5}) + "\n")
            count += 1
    return count / (time.perf_counter() - started)


def where_time_goes(chain: Chain, inputs: Path, output: Path, count: int) -> str:
    """The share of own time per area in a profiled run of `chain` over the first `count` rows of `inputs` (cProfile's
    own cost inflates the total)."""
    subset = output.parent / "subset.jsonl"
    with open(inputs) as source, open(subset, "w") as target:
        for _, line in zip(range(count), source, strict=False):
            target.write(line)
    profiler = cProfile.Profile()
    with fresh_cache():
        profiler.enable()
        chain.run(subset, output_dir=output)
        profiler.disable()
    by_area: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        by_area[area(filename)] = by_area.get(area(filename), 0.0) + own
    total = sum(by_area.values())
    shares = sorted(by_area.items(), key=lambda item: -item[1])[:8]
    return "Where the time goes (profiled, share of own time): " + ", ".join(f"{name} {own / total:.0%}" for name, own in shares)


def area(filename: str) -> str:
    """The area a profiled function's file belongs to: chainette.<module>, pydantic, asyncio, jinja2, json, builtins or other."""
    path = filename.replace("\\", "/")
    for marker in AREAS:
        if marker in path:
            tail = path.split(marker, 1)[1]
            return f"chainette.{tail.split('/')[0].removesuffix('.py')}" if marker == "/chainette/" else marker.strip("/")
    return "builtins" if filename.startswith("~") or filename.startswith("<") else "other"
