"""`--on ray` on a local two-CPU cluster, over the kill tests' torture chain (every node kind, fan-out, filters, errors,
a parallel group; fake backend, so answers are deterministic): the run directory equals a local run's, and every row
is committed once across kill -9s of block workers and of the driver. Kill instants are random, seeded and printed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import random
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

from pydantic import BaseModel
import pytest

from chainette import Chain, apply
from chainette.cli.loading import load_chain
from chainette.errors import ChainetteError
from chainette.events import Event, NodeFinished, Notice, RowFailed
from chainette.execution.executor import Executor
from chainette.frontier import rows
from chainette.nodes import INPUT_ID
from chainette.outcome import EXIT_SOME_ROWS_FAILED
from chainette_ray import scratch
from chainette_ray.driver import RayExecutor

from ..integration.invariants import assert_every_row_once, chain_file, snapshot, write_inputs
from .conftest import block_workers, environment

pytestmark = pytest.mark.ray

ROWS = 2000
INVALID = len(range(0, ROWS, 97))  # write_inputs makes every 97th row invalid
BLOCK_ROWS = 250
FIGURES = ("rows_in", "ok", "failed", "filtered", "rows_out", "requests", "retries", "repairs", "input_tokens", "output_tokens", "cached")


def command(inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chainette", "run", chain_file(), "-i", str(inputs), "-o", str(out), "-q", *extra]


def run_env(cluster: tuple[str, str, str], latency: float = 0.0) -> dict[str, str]:
    address, marker, _ = cluster
    return environment(marker, RAY_ADDRESS=address, TORTURE_LATENCY=str(latency))


def figures(out: Path) -> dict[str, object]:
    """run.json's row and spending figures (not its times)."""
    run = json.loads((out / "run.json").read_text())
    steps = {node: {name: step[name] for name in FIGURES} for node, step in run["steps"].items()}
    return {"input": run["input"], "rows_failed": run["rows_failed"], "steps": steps, "status": run["status"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The inputs, and a local run's results and figures over them (no cache)."""
    root = tmp_path_factory.mktemp("reference")
    inputs = root / "in.jsonl"
    write_inputs(inputs, ROWS)
    out = root / "local"
    done = subprocess.run(command(inputs, out, "--no-cache"), env=environment("local"), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    return inputs, snapshot(out), figures(out)


def test_results_and_figures_equal_a_local_run(cluster, reference, tmp_path):
    inputs, expected, expected_figures = reference
    out = tmp_path / "out"
    on = f"ray?block_rows={BLOCK_ROWS}"
    done = subprocess.run(command(inputs, out, "--no-cache", "--on", on), env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected
    assert figures(out) == expected_figures


def test_through_ray_client_the_chain_travels_by_value(cluster, reference, tmp_path):
    """ray://HOST:PORT: the workers cannot import the chain file's module, which travels with the chain."""
    inputs, expected, _ = reference
    out = tmp_path / "out"
    env = {key: value for key, value in run_env(cluster).items() if key != "RAY_ADDRESS"}
    done = subprocess.run(
        command(inputs, out, "--no-cache", "--on", f"{cluster[2]}?block_rows=500"), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    assert snapshot(out) == expected


def test_progress_moves_block_by_block(cluster, reference, tmp_path):
    """The driver's events (--json-logs) show each node's rows growing as blocks are committed, not only at the end."""
    inputs, _, expected_figures = reference
    args = command(inputs, tmp_path / "out", "--json-logs", "--no-cache", "--on", "ray?block_rows=100&in_flight=2")
    done = subprocess.run(args, env=run_env(cluster, latency=0.005), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    total = expected_figures["steps"]["first"]["rows_in"]
    seen = [event["nodes"]["first"]["rows_in"] for event in events if event["event"] == "progress"]
    assert any(0 < rows < total for rows in seen), f"no progress event between the start and the end: {seen}"
    assert any(event["event"] == "node_finished" and event["node"] == "last" for event in events)


def test_limit_then_the_rest_then_retry_errors_in_parquet_equal_a_local_run(cluster, reference, tmp_path):
    """--limit runs the first rows only and the same command without it goes on with the rest, as locally; --retry-errors
    asks the failed rows again (they fail alike: the fake backend and the apply are deterministic); Parquet too."""
    pytest.importorskip("pyarrow")
    inputs, expected, _ = reference
    out = tmp_path / "out"
    args = command(inputs, out, "--no-cache", "--format", "parquet", "--on", f"ray?block_rows={BLOCK_ROWS}")
    first = subprocess.run([*args, "--limit", "600"], env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert first.returncode == EXIT_SOME_ROWS_FAILED, first.stderr
    assert json.loads((out / "run.json").read_text())["input"]["rows"] == 600
    rest = subprocess.run(args, env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert rest.returncode == EXIT_SOME_ROWS_FAILED, rest.stderr
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected
    again = subprocess.run([*args, "--retry-errors"], env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert again.returncode == EXIT_SOME_ROWS_FAILED, again.stderr
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected
    retried = json.loads((out / "run.json").read_text())["sessions"][-1]["nodes"]
    assert retried["split"]["rows"] == sum(1 for error in expected["errors"] if error["step_id"] == "split")


def test_worker_kills_leave_every_row_once(cluster, reference, tmp_path):
    inputs, expected, _ = reference
    seed = random.randrange(1 << 30)
    print(f"worker kill seed {seed}")
    rng = random.Random(seed)
    out = tmp_path / "out"
    run = subprocess.Popen(
        command(inputs, out, "--cache-dir", str(tmp_path / "cache"), "--on", f"ray?block_rows={BLOCK_ROWS}&max_retries=20"),
        env=run_env(cluster, latency=0.002),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    killed: list[int] = []
    while run.poll() is None and len(killed) < 4:
        time.sleep(rng.uniform(0.2, 1.0))
        busy = block_workers(cluster[1])
        if busy:
            victim = rng.choice(busy)
            victim.kill()
            killed.append(victim.pid)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == EXIT_SOME_ROWS_FAILED, stderr.decode()
    assert killed, "no block worker was found running to kill"
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected
    left = [path for pid in killed for path in Path(tempfile.gettempdir()).glob(f"{scratch.PREFIX}{pid}-*")]
    assert not left, f"the killed workers' scratch folders were left behind: {left}"


def test_driver_kill_then_the_same_command_sends_only_what_is_left(cluster, reference, tmp_path):
    inputs, expected, _ = reference
    seed = random.randrange(1 << 30)
    print(f"driver kill seed {seed}")
    rng = random.Random(seed)
    out = tmp_path / "out"
    args = command(inputs, out, "--cache-dir", str(tmp_path / "cache"), "--on", f"ray?block_rows={BLOCK_ROWS}&in_flight=2")
    driver = subprocess.Popen(args, env=run_env(cluster, latency=0.002), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / ".chainette" / "first.jsonl"
    deadline = time.monotonic() + 120
    while not (first.exists() and first.stat().st_size) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    driver.kill()
    driver.communicate()
    assert driver.returncode == -9, "the run ended before the kill: make it longer"
    assert not (out / ".chainette" / f"{INPUT_ID}.done").exists(), "the input was finished: the blocks read it, it ends with the run"
    decided_before = sum(1 for _ in first.open("rb") if _.endswith(b"\n"))
    done = subprocess.run(args, env=run_env(cluster, latency=0.002), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected
    run = json.loads((out / "run.json").read_text())
    again = run["sessions"][-1]["nodes"]["first"]
    left = ROWS - INVALID - decided_before
    assert again["requests"] <= left, f"the second run sent {again['requests']} requests for the {left} rows left at 'first'"
    assert again["rows"] == left


def test_a_fresh_run_takes_every_block_whole_and_keeps_nothing_per_row(cluster, reference, tmp_path, monkeypatch):
    """A fresh run takes every block whole: the driver writes the flattened lines the blocks made instead of making them
    again from the frontiers (which this test forbids), and what it holds does not grow with the input (no unit's
    decided or passed rows are kept as blocks are committed); the results equal a local run's."""
    inputs, expected, _ = reference
    kept: list[int] = []
    commit = RayExecutor._commit

    def counting(self: RayExecutor, units: list, result: object) -> None:
        commit(self, units, result)
        kept.append(sum(len(unit.decided) + len(unit.passed) for unit in units))

    def from_frontiers(self: Executor, final: Path) -> None:
        raise AssertionError("the driver made the flattened table from the frontiers")

    monkeypatch.setattr(RayExecutor, "_commit", counting)
    monkeypatch.setattr(Executor, "write_flattened", from_frontiers)
    monkeypatch.setenv("RAY_ADDRESS", cluster[0])
    monkeypatch.setenv("TORTURE_LATENCY", "0")
    out = tmp_path / "out"
    load_chain(chain_file()).run(inputs, output_dir=out, cache=False, on=f"ray?block_rows={BLOCK_ROWS}")
    assert snapshot(out) == expected
    flattened = [json.loads(line)["row_id"] for line in read_lines_of(out / "flattened")]
    assert flattened == [row.row_id for row in rows(out / ".chainette" / "last.jsonl")]
    assert len(kept) == -(-ROWS // BLOCK_ROWS) and set(kept) == {0}


def read_lines_of(folder: Path) -> list[str]:
    return [line for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_a_block_committed_in_part_is_finished_without_committing_a_row_twice(cluster, reference, tmp_path):
    """As if the driver died in the middle of committing blocks: the last node lost half its commits (and the done
    markers are gone); the same command runs those rows' blocks again, and every other node skips the rows it decided."""
    inputs, expected, _ = reference
    out = tmp_path / "out"
    args = command(inputs, out, "--cache-dir", str(tmp_path / "cache"), "--on", f"ray?block_rows={BLOCK_ROWS}")
    assert subprocess.run(args, env=run_env(cluster), capture_output=True, timeout=300).returncode == EXIT_SOME_ROWS_FAILED
    state = out / ".chainette"
    for marker in state.glob("*.done"):
        if marker.stem != "chain_input":
            marker.unlink()
    last = state / "last.jsonl"
    lines = last.read_bytes().splitlines(keepends=True)
    last.write_bytes(b"".join(lines[: len(lines) // 2]))
    done = subprocess.run(args, env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_SOME_ROWS_FAILED, done.stderr
    assert_every_row_once(out, ROWS)
    assert snapshot(out) == expected
    again = json.loads((out / "run.json").read_text())["sessions"][-1]["nodes"]
    assert again["last"]["rows"] == len(lines) - len(lines) // 2
    assert again["first"]["rows"] == again["second"]["rows"] == 0


LABELLING = """
from pydantic import BaseModel
from chainette import Chain, Step, register_engine


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


register_engine("llm", {engine})
chain = Chain(name="labels", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="{{{{text}}}}")])
"""
"""A chain file: one step labelling texts on the engine "llm", registered with the options `engine` (a format field)."""
DOWN = LABELLING.format(engine='backend="openai", model="m", endpoint="http://127.0.0.1:9/v1", max_retries=0, api_key="sk-ray-test-secret"')


def test_an_engine_error_on_a_worker_ends_the_run_with_its_message_and_nothing_finished(cluster, tmp_path):
    pytest.importorskip("chainette_openai")
    (tmp_path / "down.py").write_text(DOWN)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": f"t{n}"}) + "\n" for n in range(40)))
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "chainette",
        "run",
        str(tmp_path / "down.py"),
        "-i",
        str(inputs),
        "-o",
        str(out),
        "-q",
        "--on",
        "ray?block_rows=10",
    ]
    done = subprocess.run(args, env=run_env(cluster), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Error: Engine 'llm': the endpoint http://127.0.0.1:9/v1 does not answer" in done.stderr
    assert "Traceback" not in done.stderr and "sk-ray-test-secret" not in done.stderr
    assert not (out / ".chainette" / "label.done").exists(), "a node the run did not finish was marked finished"
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


IDS = LABELLING.format(engine='backend="fake", model="m"')


def test_with_an_id_column_a_repeated_id_stops_the_run_before_any_block(cluster, tmp_path):
    (tmp_path / "ids.py").write_text(IDS)
    inputs = tmp_path / "in.jsonl"
    ids = [*range(100_000), 3]  # long enough to read that blocks would be committed meanwhile
    inputs.write_text("".join(json.dumps({"key": f"k{n}", "text": f"t{n}"}) + "\n" for n in ids))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "chainette", "run", str(tmp_path / "ids.py"), "-i", str(inputs), "-o", str(out), "-q"]
    done = subprocess.run([*args, "--id-column", "key", "--on", "ray?block_rows=100"], env=run_env(cluster), capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "in.jsonl:100001" in done.stderr and "Row ids must be unique" in done.stderr and "Traceback" not in done.stderr
    assert not list((out / "label").glob("*.jsonl")) or not (out / "label" / "000.jsonl").read_text(), (
        "a block ran before the ids were checked"
    )


def test_blocks_are_committed_while_the_input_is_read(cluster, tmp_path, monkeypatch):
    """The input is read slowly: past its first two blocks' rows it waits (up to a minute) for a block to be committed,
    its failure reported, before reading on; so the first failure comes before the input node finishes, however slowly
    the workers start, unless blocks wait for the whole input."""
    from chainette_ray import blocks

    events: list[Event] = []
    read = 0

    async def slowly(seconds: float) -> None:
        nonlocal read
        read += 1
        deadline = time.monotonic() + 60
        while read > 200 and not any(isinstance(event, RowFailed) for event in events) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(seconds)

    monkeypatch.setattr(blocks, "YIELD_EVERY", 1)
    monkeypatch.setattr(blocks, "asyncio", SimpleNamespace(**{**vars(asyncio), "sleep": slowly}))
    monkeypatch.setenv("RAY_ADDRESS", cluster[0])
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"n": {n}}}\n' for n in range(3000)))
    chain = Chain(name="thousandths", steps=[apply(_check, input_model=_Number, output_model=_Number)])
    chain.run(rows, output_dir=tmp_path / "out", reporter=events.append, on="ray?block_rows=100")
    finished = next(n for n, event in enumerate(events) if isinstance(event, NodeFinished) and event.node == INPUT_ID)
    failed = [n for n, event in enumerate(events) if isinstance(event, RowFailed)]  # a block's failures come with its commit
    assert len(failed) == 3
    assert failed[0] < finished, "no block was committed before the whole input was read"


class _Number(BaseModel):
    n: int


def _check(row: _Number) -> list[_Number]:
    if row.n % 1000 == 0:
        raise ValueError("a thousandth row")
    return [row]


_OTHERWISE = Path("/nonexistent")
"""While this file exists, `_first` leaves odd rows out: it answers otherwise, with the same code (a test sets the path)."""


def _first(row: _Number) -> list[_Number]:
    return [row] if row.n % 2 == 0 or not _OTHERWISE.exists() else []


def _last(row: _Number) -> _Number:
    return row


def test_rows_a_block_run_again_answers_otherwise_are_passed_over_until_a_command_decides_them(cluster, tmp_path, monkeypatch):
    """As if the driver died after 'first' passed every row on and 'last' committed half of them, and 'first' now
    answers otherwise (it leaves odd rows out): the blocks run again commit the even rows, the odd ones stay undecided
    pass after pass (the run says so and what to do), and the same command, once 'first' answers as before, decides
    them; each row once throughout."""
    monkeypatch.setenv("RAY_ADDRESS", cluster[0])
    monkeypatch.setattr(sys.modules[__name__], "_OTHERWISE", tmp_path / "otherwise")
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out"
    inputs.write_text("".join(f'{{"n": {n}}}\n' for n in range(40)))
    chain = Chain(name="again", steps=[apply(_first, id="first", input_model=_Number, output_model=_Number), apply(_last, id="last")])
    chain.run(inputs, output_dir=out, cache=False, on=BY_EIGHT)
    state = out / ".chainette"
    for node in ("first", "last"):
        (state / f"{node}.done").unlink()
    last = state / "last.jsonl"
    last.write_bytes(b"".join(last.read_bytes().splitlines(keepends=True)[:20]))
    kept = {row.index for row in rows(last)}
    (tmp_path / "otherwise").touch()
    with pytest.raises(ChainetteError, match="still undecided after 3 passes"):
        chain.run(inputs, output_dir=out, cache=False, on=BY_EIGHT)
    assert sorted(row.index for row in rows(last)) == sorted(kept | set(range(0, 40, 2)))
    (tmp_path / "otherwise").unlink()
    chain.run(inputs, output_dir=out, cache=False, on=BY_EIGHT)
    assert sorted(row.index for row in rows(last)) == list(range(40))
    assert sorted(row.index for row in rows(state / "first.jsonl")) == list(range(40))


BY_EIGHT = "ray?block_rows=8"


class _Review(BaseModel):
    text: str


def _shout(row: _Review) -> _Review:
    return _Review(text=row.text.upper())


def test_the_blocks_pick_and_rename_columns_and_refuse_rows_as_a_local_run_does(cluster, tmp_path, monkeypatch):
    """The blocks validate the input rows as read: `--columns` picks and renames in them, and a row without the column
    is refused with the local run's message, file and line, in the same output and errors."""
    monkeypatch.setenv("RAY_ADDRESS", cluster[0])
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"review": f"r{n}", "stars": n} if n % 7 else {"stars": n}) + "\n" for n in range(30)))
    chain = Chain(name="columns", steps=[apply(_shout, id="shout", input_model=_Review, output_model=_Review)])
    results = {}
    for name, on in (("local", None), ("ray", BY_EIGHT)):
        out = tmp_path / name
        chain.run(inputs, output_dir=out, cache=False, columns="review=text", on=on)
        outputs = sorted(
            (json.loads(line) for path in (out / "shout").glob("*.jsonl") for line in path.read_text().splitlines()),
            key=lambda row: row["row_id"],
        )
        errors = sorted(
            (e["row_id"], e["row_index"], e["message"]) for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())
        )
        results[name] = outputs, errors
    assert results["ray"] == results["local"]
    outputs, errors = results["local"]
    assert len(outputs) == 25 and {"row_id": "1", "row_index": 1, "text": "R1"} in outputs
    assert errors[0][:2] == ("0", 0) and f"{inputs}:1" in errors[0][2] and "review" in errors[0][2]


def test_a_target_nothing_answers_at_is_one_paragraph(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 3)
    done = subprocess.run(command(inputs, tmp_path / "out", "--on", "ray://bad:1"), env=environment("bad"), capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "--on ray://bad:1: nothing answers at bad:1" in done.stderr
    assert not (tmp_path / "out").exists()


def test_backends_list_shows_the_runner():
    done = subprocess.run(
        [sys.executable, "-m", "chainette", "backends", "list", "--json"], env=environment("list"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ray = {entry["name"]: entry for entry in json.loads(done.stdout)}["ray"]
    assert (ray["kind"], ray["distribution"], ray["status"]) == ("runner", "chainette-ray", "ok")


def test_a_process_connected_already_runs_there_and_stays_connected(cluster, reference, tmp_path):
    """After `ray.init`, `on="ray"` runs on that connection and leaves it open, its actors alive (a script that started
    its own servers as actors keeps them); a `ray://` address elsewhere is refused, naming what to do."""
    import ray

    inputs, expected, _ = reference
    ray.init(address=cluster[0], logging_level="WARNING", log_to_driver=False)
    try:
        keeper = ray.remote(num_cpus=0)(_Keeper).remote()
        assert ray.get(keeper.ping.remote()) == "here"
        out = tmp_path / "out"
        load_chain(chain_file()).run(inputs, output_dir=out, cache=False, on=f"ray?block_rows={BLOCK_ROWS}")
        assert snapshot(out) == expected
        assert ray.is_initialized()
        assert ray.get(keeper.ping.remote(), timeout=30) == "here"
        with pytest.raises(ChainetteError, match=r"connected to a Ray cluster already .*ray\.shutdown\(\)"):
            load_chain(chain_file()).run(inputs, output_dir=tmp_path / "elsewhere", cache=False, on="ray://elsewhere:10001")
    finally:
        ray.shutdown()


class _Keeper:
    """An actor the test's own connection made, which a run on that connection must leave alive."""

    def ping(self) -> str:
        return "here"


def test_block_workers_waiting_for_cpus_are_told_once_and_the_run_goes_on_when_they_start(cluster, tmp_path, monkeypatch):
    """With every CPU of the cluster held by another actor, the block workers cannot start: after STARTING_SECONDS the
    user is told (one Notice) what they wait for; once the CPUs are freed, they start and the run ends whole."""
    import ray

    from chainette_ray import driver

    monkeypatch.setattr(driver, "STARTING_SECONDS", 1.0)
    events: list[Event] = []
    ray.init(address=cluster[0], logging_level="WARNING", log_to_driver=False)
    try:
        hog = ray.remote(num_cpus=2)(_Keeper).remote()
        assert ray.get(hog.ping.remote()) == "here"

        def report(event: Event) -> None:
            events.append(event)
            if isinstance(event, Notice):
                ray.kill(hog)  # the CPUs freed once the user is told

        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(f'{{"n": {n}}}\n' for n in range(1, 301)))
        chain = Chain(name="numbers", steps=[apply(_check, input_model=_Number, output_model=_Number)])
        untold = threading.Timer(30.0, ray.kill, args=(hog,))  # without a Notice, the run would wait for ever
        untold.start()
        try:
            result = chain.run(rows, output_dir=tmp_path / "out", reporter=report, on="ray?block_rows=100")
        finally:
            untold.cancel()
    finally:
        ray.shutdown()
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert len(notices) == 1, notices
    assert "2 of 2 block workers have not started after 1 s" in notices[0] and "0 of its 2 CPUs free" in notices[0]
    assert len(result["_check"]) == 300
