"""What must hold in a run directory after any crash and after a resume (see chainette.run.appends's docstring)."""

from __future__ import annotations

from collections import Counter
import json
import os
from pathlib import Path
import random

from chainette.run.appends import output_files, read_outputs
from chainette.run.rundir import RunPaths

from .torture_chain import TOPOLOGY, UPSTREAM

NODES = [node for node, _ in TOPOLOGY]
FOLDERS = [*NODES, "flattened"]


def write_inputs(path: Path, count: int, seed: int = 0, size: int = 400) -> None:
    """`count` rows of about `size` bytes, every 97th one invalid (no text)."""
    rng = random.Random(seed)
    with open(path, "w") as file:
        for index in range(count):
            row = {"text": f"row {index} " + "".join(rng.choice("abcdefgh ") for _ in range(size)), "skip": 1}
            row.update({"ctx": "c", "direct": "d", "src": f"s{index}", "origin": "o"})
            if index % 97 == 13:
                del row["text"]
            file.write(json.dumps(row) + "\n")


def complete_lines(path: Path) -> list[bytes]:
    """The complete lines of a file (a killed run may leave half a last line)."""
    if not path.exists():
        return []
    return [line for line in path.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]


def committed_rows(frontier: Path) -> list[str]:
    """The row ids a frontier passes on, in commit order (complete lines only)."""
    return [row["row_id"] for line in complete_lines(frontier) for row in json.loads(line)["rows"]]


def jsonl_folder(out: Path, node: str, output_format: str) -> Path:
    return out / ".chainette" / "outputs" / node if output_format == "parquet" else out / node


def assert_commits_covered(out: Path, output_format: str) -> None:
    """At any instant: each node's committed rows are exactly the first lines of its JSONL output files, in order."""
    for node in NODES:
        committed = committed_rows(out / ".chainette" / f"{node}.jsonl")
        written = [
            json.loads(line)["row_id"] for path in output_files(jsonl_folder(out, node, output_format)) for line in complete_lines(path)
        ]
        assert written[: len(committed)] == committed, f"{node}: a committed row's output line is missing or out of place"


def errors(out: Path) -> list[dict]:
    return [json.loads(line) for line in complete_lines(out / "errors.jsonl")]


def assert_every_row_once(out: Path, input_rows: int) -> None:
    """After a completed run: every row a node received is decided exactly once (committed or in errors), and the
    node's output folder holds exactly the rows its frontier passed."""
    state = out / ".chainette"
    failed = Counter((error["step_id"], error["row_id"]) for error in errors(out))
    assert max(failed.values(), default=1) == 1, "a row is in errors.jsonl twice"
    received = {"chain_input.jsonl": [str(i) for i in range(input_rows)]}
    decided_input = [json.loads(line)["source"] for line in complete_lines(state / "chain_input.jsonl")]
    decided_input += [row for step, row in failed if step == "chain_input"]
    assert sorted(decided_input) == sorted(received["chain_input.jsonl"]), "input rows lost or duplicated"
    for node, source in TOPOLOGY:
        given = committed_rows(state / source)
        decided = [json.loads(line)["source"] for line in complete_lines(state / f"{node}.jsonl")]
        decided += [row for step, row in failed if step == node]
        assert Counter(decided) == Counter(given), f"{node}: rows lost or decided twice"
        outputs = [record["row_id"] for record in read_outputs(out / node)]
        assert Counter(outputs) == Counter(committed_rows(state / f"{node}.jsonl")), f"{node}: outputs differ from its frontier"


def frontier_sizes(out: Path) -> dict[str, int]:
    """The size in bytes of every node's frontier (the input's too), 0 for one not written yet."""
    paths = RunPaths(out)
    return {node: paths.frontier(node).stat().st_size if paths.frontier(node).exists() else 0 for node in UPSTREAM}


def active_nodes(out: Path, before: dict[str, int]) -> set[str]:
    """The nodes active in the session that just ended: each frontier grown past its size in `before` (the sizes
    the session started from), of a node with no done marker."""
    paths = RunPaths(out)
    grown = frontier_sizes(out)
    return {node for node, size in grown.items() if size > before[node] and not paths.done_marker(node).exists()}


def longest_in_sequence(active: set[str]) -> int:
    """How many of the `active` nodes lie on one path of the chain, each reading (through others or not) the rows
    of the one before: 1 when nodes run one after another (sibling branches may still run at once), more once rows
    stream between nodes."""
    on_path: dict[str, int] = {}
    for node, upstream in UPSTREAM.items():
        on_path[node] = (node in active) + max((on_path[source] for source in upstream), default=0)
    return max(on_path.values())


def snapshot(out: Path) -> dict[str, list]:
    """Every user-facing result of a run, order-free: each output folder's records and the errors."""
    view = {folder: sorted(read_outputs(out / folder), key=lambda r: r["row_id"]) for folder in FOLDERS}
    view["errors"] = sorted(errors(out), key=lambda e: (e["step_id"], e["row_id"]))
    return view


def chain_file() -> str:
    return f"{Path(__file__).with_name('torture_chain.py')}:chain"


def environment(latency: float) -> dict[str, str]:
    return {**os.environ, "TORTURE_LATENCY": str(latency), "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}
