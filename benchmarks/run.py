"""Chainette's benchmark: every throughput, overhead, memory, start-up, scale-out and cache goal, each
against a baseline measured in the same run. Prints a table: figure, value, baseline, ratio, goal, met.
Every run starts with an empty response cache of its own (never the user's), so that no figure is a cache hit
but those of the fully cached reruns (goals 3 and 6).

Usage: python benchmarks/run.py [--quick] [--strict]

Exits 0 once the table is printed; with --strict, 1 when a goal is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
from dataclasses import dataclass
import json
import os
from pathlib import Path
import pstats
import subprocess
import sys
import tempfile
import threading
import time

HERE = Path(__file__).resolve().parent
LATENCY = 0.05
IN_FLIGHT = 64
PAYLOAD_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    "required": ["label", "score"],
}


@dataclass
class Row:
    figure: str
    value: float
    baseline: float
    goal: str
    met: bool
    unit: str = "rows/s"

    def cells(self) -> list[str]:
        ratio = self.value / self.baseline if self.baseline else float("nan")
        return [
            self.figure,
            f"{self.value:,.1f} {self.unit}",
            f"{self.baseline:,.1f} {self.unit}",
            f"{ratio:.2f}",
            self.goal,
            "met" if self.met else "NOT MET",
        ]


@contextlib.contextmanager
def server(latency: float, capacity: int | None = None):
    """A fake server process on a free loopback port; yields its base URL."""
    args = [sys.executable, str(HERE / "serve.py"), str(latency)] + ([str(capacity)] if capacity else [])
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """End a process we started: SIGTERM, then SIGKILL if it still runs after 5 s; its pipes are closed."""
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdin.close()
    process.stdout.close()


def messages(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Classify review number {index}: it was fine."}]


async def pump(count: int, send) -> float:
    """rows/s of `count` calls of `send(i)`, IN_FLIGHT at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await send(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return count / (time.perf_counter() - started)


async def bare_httpx2(url: str, count: int, ollama: bool) -> float:
    import httpx2

    limits = httpx2.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def send(index: int) -> None:
            if ollama:
                body = {"model": "fake-model", "messages": messages(index), "stream": False, "format": PAYLOAD_SCHEMA}
                answer = (await client.post("/api/chat", json=body)).json()
                json.loads(answer["message"]["content"])
            else:
                body = {
                    "model": "fake-model",
                    "messages": messages(index),
                    "response_format": {"type": "json_schema", "json_schema": {"name": "Label", "schema": PAYLOAD_SCHEMA}},
                }
                answer = (await client.post("/v1/chat/completions", json=body)).json()
                json.loads(answer["choices"][0]["message"]["content"])

        return await pump(count, send)


async def bare_openai(url: str, count: int) -> float:
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    client = openai.AsyncOpenAI(
        api_key="none", base_url=f"{url}/v1", max_retries=0, http_client=httpx2.AsyncClient(limits=limits, timeout=60)
    )
    response_format = {"type": "json_schema", "json_schema": {"name": "Label", "schema": PAYLOAD_SCHEMA, "strict": True}}

    async def send(index: int) -> None:
        completion = await client.chat.completions.create(model="fake-model", messages=messages(index), response_format=response_format)
        json.loads(completion.choices[0].message.content)

    try:
        return await pump(count, send)
    finally:
        await client.close()


@contextlib.contextmanager
def fresh_cache():
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


def chain_run(backend: str, endpoint: str | list[str], count: int, concurrency: int = IN_FLIGHT, cache: bool = True) -> tuple[float, int]:
    """rows/s and rows answered of a one-step chain over `count` rows on `backend` (the whole run: reading, writing,
    validating, and with `cache`, looking every request up in an empty response cache and storing its answer)."""
    from pydantic import BaseModel

    from chainette import Chain, Step, register_engine

    class Review(BaseModel):
        index: int

    class Label(BaseModel):
        label: str
        score: float

    register_engine("bench", backend=backend, model="fake-model", endpoint=endpoint, api_key="none", max_concurrency=concurrency)
    step = Step(
        id="label",
        input_model=Review,
        output_model=Label,
        engine_name="bench",
        user_prompt="Classify review number {{index}}: it was fine.",
        output_format_instruction="",
    )
    chain = Chain(name="bench", steps=[step])
    with tempfile.TemporaryDirectory() as folder, fresh_cache():
        started = time.perf_counter()
        result = chain.run([{"index": i} for i in range(count)], output_dir=Path(folder) / "out", cache=cache)
        return count / (time.perf_counter() - started), result.stats["steps"]["label"]["ok"]


def chain_rate(backend: str, endpoint: str | list[str], count: int, concurrency: int = IN_FLIGHT, cache: bool = True) -> float:
    rate, answered = chain_run(backend, endpoint, count, concurrency, cache)
    assert answered == count, f"{backend}: {answered} of {count} rows answered"
    return rate


def throughput(count: int) -> list[Row]:
    """Goal 1: each backend against the bare client it is built on, same server, rounds interleaved, best of three."""
    best: dict[str, float] = {}
    with server(LATENCY) as url:
        rounds = {
            "httpx2 (OpenAI format)": lambda: asyncio.run(bare_httpx2(url, count, ollama=False)),
            "chainette vllm": lambda: chain_rate("vllm", f"{url}/v1", count),
            "AsyncOpenAI SDK": lambda: asyncio.run(bare_openai(url, count)),
            "chainette openai": lambda: chain_rate("openai", f"{url}/v1", count),
            "httpx2 (Ollama format)": lambda: asyncio.run(bare_httpx2(url, count, ollama=True)),
            "chainette ollama": lambda: chain_rate("ollama", url, count),
        }
        for _ in range(3):
            for name, measure in rounds.items():
                best[name] = max(best.get(name, 0.0), measure())
    pairs = [
        ("chainette vllm", "httpx2 (OpenAI format)", 0.9),
        ("chainette openai", "AsyncOpenAI SDK", 0.8),
        ("chainette ollama", "httpx2 (Ollama format)", 0.8),
    ]
    return [
        Row(
            f"1. {name} vs {base} (50 ms, {IN_FLIGHT} in flight)",
            best[name],
            best[base],
            f">= {goal:.0%} of baseline",
            best[name] >= goal * best[base],
        )
        for name, base, goal in pairs
    ]


MODELS = """
import json, sys, time
from pydantic import BaseModel
from chainette import Chain, Step, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str
    score: float

register_engine("fake", backend="fake", model="m", cache=True)  # fake answers skip the cache unless told: measure it
"""
OVERHEAD_CHAIN = (
    MODELS
    + """
first = Step(id="first", input_model=Text, output_model=Label, engine_name="fake", user_prompt="Classify {{text}}")
second = Step(id="second", output_model=Label, engine_name="fake", user_prompt="Check {{label}} for {{chain_input.text}}")
chain = Chain(name="overhead", steps=[first, second])
"""
)


def write_inputs(path: Path, count: int) -> None:
    with open(path, "w") as file:
        for index in range(count):
            file.write(json.dumps({"text": f"review number {index}: it was fine"}) + "\n")


def overhead(count: int) -> tuple[list[Row], str]:
    """Goal 2: the fake backend with no latency, two steps, every output written (best of two); what
    --durable's fsyncs cost on this disk; and where the time goes."""
    namespace: dict[str, object] = {}
    exec(OVERHEAD_CHAIN, namespace)
    chain = namespace["chain"]
    rate = baseline = durable = 0.0
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in.jsonl"
        write_inputs(inputs, count)
        for attempt in range(2):
            rate = max(rate, _chain_rate(chain, inputs, Path(folder) / f"out-{attempt}", count))
            durable = max(durable, _chain_rate(chain, inputs, Path(folder) / f"durable-{attempt}", count, durable=True))
            baseline = max(baseline, _read_write_rate(inputs, Path(folder) / "copy.jsonl"))
        profile = _profile(chain, inputs, Path(folder) / "profiled", min(count, 20_000))
    rows = [
        Row(f"2. fake backend, two steps, {count:,} rows", rate, baseline, ">= 10,000 rows/s", rate >= 10_000),
        Row("2. the same with --durable (fsync per flush) vs without", durable, rate, ">= 50% of without", durable >= 0.5 * rate),
    ]
    return rows, profile


def _chain_rate(chain, inputs: Path, output: Path, count: int, durable: bool = False, fresh: bool = True, cached: int = 0) -> float:
    """Rows per second of one run of the overhead chain over `inputs`, in an empty response cache unless not `fresh`
    (then in the current one); `cached`: how many rows the cache must have answered."""
    with fresh_cache() if fresh else contextlib.nullcontext():
        started = time.perf_counter()
        result = chain.run(inputs, output_dir=output, durable=durable)
        elapsed = time.perf_counter() - started
    assert result.stats["steps"]["second"]["ok"] == count
    assert result.stats["steps"]["second"]["cached"] == cached, result.stats["steps"]["second"]
    return count / elapsed


def cache_costs(requests: int, count: int) -> list[Row]:
    """Goal 6: what looking up and storing every request costs a run kept at about 1,000 rows/s by the server (an empty
    cache against none, rounds interleaved, best of three); and a rerun of the overhead chain answered wholly from
    the cache, against the run that filled it."""
    best = {True: 0.0, False: 0.0}
    with server(IN_FLIGHT / 1000) as url:
        for _ in range(3):
            for cache in (False, True):
                best[cache] = max(best[cache], chain_rate("vllm", f"{url}/v1", requests, cache=cache))
    namespace: dict[str, object] = {}
    exec(OVERHEAD_CHAIN, namespace)
    chain = namespace["chain"]
    with tempfile.TemporaryDirectory() as folder, fresh_cache():
        inputs = Path(folder) / "in.jsonl"
        write_inputs(inputs, count)
        filling = _chain_rate(chain, inputs, Path(folder) / "fill", count, fresh=False)
        rerun = _chain_rate(chain, inputs, Path(folder) / "rerun", count, fresh=False, cached=count)
    return [
        Row(
            "6. cache lookups and stores at ~1,000 rows/s (vllm, fake server) vs no cache",
            best[True],
            best[False],
            ">= 95% of baseline",
            best[True] >= 0.95 * best[False],
        ),
        Row(
            f"6. fully cached rerun, two steps, {count:,} rows vs the run that filled the cache",
            rerun,
            filling,
            ">= 10,000 rows/s",
            rerun >= 10_000,
        ),
    ]


LONG_CHAIN = (
    MODELS
    + """
def long_chain(length):
    first = Step(id="s0", input_model=Text, output_model=Label, engine_name="fake", user_prompt="Classify {{text}}")
    rest = [Step(id=f"s{i}", output_model=Label, engine_name="fake", user_prompt="Check {{label}}") for i in range(1, length)]
    return Chain(name=f"long{length}", steps=[first, *rest])
"""
)


def disk_per_row(count: int, length: int = 10) -> Row:
    """Goal 2b: the run's state (frontiers) per row grows linearly with the number of steps: a `length`-step chain
    against `length` times a one-step chain."""
    namespace: dict[str, object] = {}
    exec(LONG_CHAIN, namespace)
    long_chain = namespace["long_chain"]
    sizes = {}
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in.jsonl"
        write_inputs(inputs, count)
        for steps in (1, length):
            out = Path(folder) / f"out-{steps}"
            long_chain(steps).run(inputs, output_dir=out)
            sizes[steps] = sum(path.stat().st_size for path in (out / ".chainette").glob("*.jsonl")) / count
    figure = f"2. state on disk per row, {length} steps vs {length} x one step"
    return Row(figure, sizes[length], length * sizes[1], "<= 1.0 x (linear)", sizes[length] <= length * sizes[1], unit="bytes")


def _read_write_rate(inputs: Path, copy: Path) -> float:
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


def _profile(chain, inputs: Path, output: Path, count: int) -> str:
    """The share of time per module in a profiled run (cProfile's own cost inflates the total)."""
    subset = output.parent / "subset.jsonl"
    with open(inputs) as source, open(subset, "w") as target:
        for _, line in zip(range(count), source, strict=False):
            target.write(line)
    profiler = cProfile.Profile()
    with fresh_cache():
        profiler.enable()
        chain.run(subset, output_dir=output)
        profiler.disable()
    stats = pstats.Stats(profiler)
    by_area: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, _) in stats.stats.items():
        by_area[_area(filename)] = by_area.get(_area(filename), 0.0) + own
    total = sum(by_area.values())
    shares = sorted(by_area.items(), key=lambda item: -item[1])[:8]
    return "Where the time goes (profiled, share of own time): " + ", ".join(f"{name} {own / total:.0%}" for name, own in shares)


def _area(filename: str) -> str:
    path = filename.replace("\\", "/")
    for marker in ("/chainette/", "/pydantic", "/asyncio/", "/jinja2/", "/json/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return f"chainette.{tail.split('/')[0].removesuffix('.py')}" if marker == "/chainette/" else marker.strip("/")
    return "builtins" if filename.startswith("~") or filename.startswith("<") else "other"


MEMORY_SCRIPT = (
    OVERHEAD_CHAIN
    + """
import resource
result = chain.run(sys.argv[1], output_dir=sys.argv[2])
try:  # this process's own peak (Linux, kB): ru_maxrss keeps the parent's peak across fork and exec
    peak = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(result.stats["steps"]["second"]["cached"], peak)
"""
)


def memory(count: int) -> list[Row]:
    """Goal 3: peak RSS of a two-step fake run over `count` rows, against the same run over 1,000 rows; and of a rerun
    of those `count` rows answered wholly from the response cache, against the run that filled it. Each run is a
    process of its own."""

    def peak(inputs: Path, output: Path, cached: int) -> float:
        done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(inputs), str(output)], capture_output=True, text=True, check=True)
        answered, rss = (int(word) for word in done.stdout.split()[-2:])
        assert answered == cached, f"{answered} of the second step's rows came from the cache, not {cached}"
        return rss / 1024

    with tempfile.TemporaryDirectory() as folder:
        small, large = Path(folder) / "in-small.jsonl", Path(folder) / "in-large.jsonl"
        write_inputs(small, 1_000)
        write_inputs(large, count)
        with fresh_cache():
            baseline = peak(small, Path(folder) / "out-small", cached=0)
        with fresh_cache():
            filling = peak(large, Path(folder) / "out-fill", cached=0)
            rerun = peak(large, Path(folder) / "out-rerun", cached=count)
    return [
        Row(f"3. peak RSS, {count:,} rows, two steps (baseline: 1,000 rows)", filling, baseline, "< 300 MB", filling < 300, unit="MB"),
        Row(
            f"3. peak RSS, fully cached rerun of those {count:,} rows (baseline: the run that filled the cache)",
            rerun,
            filling,
            "< 300 MB",
            rerun < 300,
            unit="MB",
        ),
    ]


def start_up() -> list[Row]:
    """Goal 4: import time against pydantic's, and what `import chainette` / `chainette --help` / `backends list` load."""

    def best_time(code: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - started)
        return min(times) * 1000

    def loaded(code: str) -> set[str]:
        probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
        output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        return set(output.splitlines()[-1].split())

    heavy = {"openai", "httpx2", "httpx", "vllm", "aiohttp"}
    backends = {"chainette_openai", "chainette_vllm", "chainette_ollama"}
    cli = "import sys\nfrom chainette.cli import main\nsys.argv = ['chainette', {}]\ntry:\n    main()\nexcept SystemExit:\n    pass"
    light_import = loaded("import chainette").isdisjoint(heavy | backends | {"typer", "rich"})
    light_help = loaded(cli.format("'--help'")).isdisjoint(heavy | backends)
    light_list = loaded(cli.format("'backends', 'list'")).isdisjoint(heavy)
    chainette_ms, pydantic_ms = best_time("import chainette"), best_time("import pydantic")
    return [
        Row(
            "4. python -c 'import chainette' (baseline: import pydantic)",
            chainette_ms,
            pydantic_ms,
            "no backend/HTTP/CLI/UI module",
            light_import,
            unit="ms",
        ),
        Row(
            "4. chainette --help / backends list: no backend or HTTP module",
            float(light_help),
            float(light_list),
            "both light",
            light_help and light_list,
            unit="(1 = light)",
        ),
    ]


def scale_out(count: int) -> list[Row]:
    """Goal 5: one engine over two replicas (each serving 16 at a time) against twice one replica's rate (best of two);
    then the same run with one replica stopped a third of the way must still answer every row."""
    with server(LATENCY, capacity=16) as first, server(LATENCY, capacity=16) as second:
        one = max(chain_rate("vllm", f"{first}/v1", count, concurrency=32) for _ in range(2))
        two = max(chain_rate("vllm", [f"{first}/v1", f"{second}/v1"], count, concurrency=32) for _ in range(2))
        with contextlib.ExitStack() as doomed:
            third = doomed.enter_context(server(LATENCY, capacity=16))
            stopper = threading.Timer(count / two / 3, doomed.close)
            stopper.start()
            try:
                _, answered = chain_run("vllm", [f"{first}/v1", f"{third}/v1"], count, concurrency=32)
            finally:
                stopper.cancel()
                stopper.join()
    return [
        Row("5. two vLLM replicas vs 2 x one replica (capacity 16 each)", two, 2 * one, ">= 85% of linear scaling", two >= 0.85 * 2 * one),
        Row("5. one of two replicas stopped mid-run: rows answered", answered, count, "every row", answered == count, unit="rows"),
    ]


def measure(requests: int, rows: int, big: int) -> tuple[list[Row], str]:
    """Every goal's row, and the overhead run's profile."""
    table = throughput(requests)
    rows_overhead, profile = overhead(rows)
    table.extend(rows_overhead)
    table.append(disk_per_row(rows // 10))
    table.extend(memory(big))
    table.extend(start_up())
    table.extend(scale_out(requests // 2))
    table.extend(cache_costs(requests, rows))
    return table, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test (goals may then not be met)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met (by default the table is the result)")
    args = parser.parse_args()
    os.environ.setdefault("CHAINETTE_LOAD_PLUGINS", "openai,vllm,ollama")
    requests, rows, big = (600, 10_000, 50_000) if args.quick else (3_000, 100_000, 1_000_000)
    with fresh_cache():
        table, profile = measure(requests, rows, big)
    _print(table)
    print(profile)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    unmet = [row.figure for row in table if not row.met]
    print(f"{len(table) - len(unmet)} of {len(table)} goals met" + "".join(f"\n  not met: {figure}" for figure in unmet))
    sys.exit(1 if args.strict and unmet else 0)


def _print(table: list[Row]) -> None:
    header = ["figure", "value", "baseline", "ratio", "goal", "met?"]
    rows = [header] + [row.cells() for row in table]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
