"""What every benchmark goal shares: the table's figures, fake servers in their own processes, a private response
cache, input files, and timed chainette runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import contextlib
from dataclasses import dataclass
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

from chainette import Chain
from chainette.events import Listener

HERE = Path(__file__).resolve().parent
LATENCY = 0.05
"""The fake server's answer time, in seconds, for the goals against bare clients."""
IN_FLIGHT = 64
"""Requests in flight, for chainette and for the bare clients alike."""


@dataclass(frozen=True)
class Figure:
    """One line of the table: a measured `value` against a `baseline` measured in the same run, and whether it met
    its `goal`; a figure not `binding` is reported only, and never counts as an unmet goal."""

    name: str
    value: float
    baseline: float
    goal: str
    met: bool
    unit: str = "rows/s"
    binding: bool = True

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    @property
    def verdict(self) -> str:
        if not self.binding:
            return "reported"
        return "met" if self.met else "NOT MET"


@dataclass(frozen=True)
class Outcome:
    """What one goal measured: its figures, and notes printed under the table (such as a profile)."""

    figures: tuple[Figure, ...]
    notes: tuple[str, ...] = ()

    @property
    def unmet(self) -> tuple[Figure, ...]:
        return tuple(figure for figure in self.figures if figure.binding and not figure.met)


def best_of(rounds: int, measures: Mapping[str, Callable[[], float]]) -> dict[str, float]:
    """The highest value of each measure over `rounds` rounds, the measures taking turns within each round, in the
    opposite order each round (so that a slow spell of a shared machine, or what a run leaves behind for the next one,
    falls on all of them)."""
    best = dict.fromkeys(measures, 0.0)
    for number in range(rounds):
        for name, measure in list(measures.items())[:: -1 if number % 2 else 1]:
            best[name] = max(best[name], measure())
    return best


@contextlib.contextmanager
def server(latency: float, capacity: int | None = None, refuse: int | None = None) -> Iterator[str]:
    """A fake server process (benchmarks/serve.py) on a free loopback port, answering after `latency` seconds at most
    `capacity` requests at a time (the others queueing, or with `refuse`, answered that status at once); yields its base
    URL and stops it at the end."""
    args = (
        [sys.executable, str(HERE / "serve.py"), str(latency)] + ([str(capacity)] if capacity else []) + ([str(refuse)] if refuse else [])
    )
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    """End a process we started: SIGTERM, then SIGKILL if it still runs after 5 s; its pipes are closed."""
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def fresh_cache() -> Iterator[Path]:
    """Within the block, runs use an empty response cache of their own (CHAINETTE_CACHE_DIR)."""
    before = os.environ.get("CHAINETTE_CACHE_DIR")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CHAINETTE_CACHE_DIR"] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                del os.environ["CHAINETTE_CACHE_DIR"]
            else:
                os.environ["CHAINETTE_CACHE_DIR"] = before


def write_inputs(path: Path, count: int) -> None:
    """A JSONL file of `count` rows with a `text` field, the input of the fake-backend chains."""
    with open(path, "w") as file:
        for index in range(count):
            file.write(json.dumps({"text": f"review number {index}: it was fine"}) + "\n")


def answered_rate(chain: Chain, last: str, count: int, *, cache: bool = True, reporter: Listener | None = None) -> tuple[float, int]:
    """rows/s of a run of `chain` over `count` rows `{"index": i}` in an empty response cache (the whole run: reading,
    writing, validating, and with `cache`, looking every request up and storing its answer), and how many rows its
    last step, `last`, answered; `reporter` receives the run's events."""
    with tempfile.TemporaryDirectory() as folder, fresh_cache():
        started = time.perf_counter()
        result = chain.run([{"index": i} for i in range(count)], output_dir=Path(folder) / "out", cache=cache, reporter=reporter)
        rate = count / (time.perf_counter() - started)
        answered: int = result.stats["steps"][last]["ok"]
    return rate, answered


def full_rate(chain: Chain, last: str, count: int, *, cache: bool = True) -> float:
    """rows/s of a run of `chain` over `count` rows (see `answered_rate`), every row of which must be answered."""
    rate, answered = answered_rate(chain, last, count, cache=cache)
    assert answered == count, f"{chain.name}: {answered} of {count} rows answered"
    return rate


def file_rate(chain: Chain, inputs: Path, output: Path, count: int, *, durable: bool = False, cached: int = 0, cache: bool = True) -> float:
    """rows/s of a run of a chain ending with the step `second` over the `count` rows of `inputs`, in the current
    response cache (`cache`: whether the run uses it); `cached`: how many of the second step's rows the cache must have
    answered."""
    started = time.perf_counter()
    result = chain.run(inputs, output_dir=output, durable=durable, cache=cache)
    elapsed = time.perf_counter() - started
    second = result.stats["steps"]["second"]
    assert second["ok"] == count, second
    assert second["cached"] == cached, second
    return count / elapsed
