"""RowPositions holds the same ids and positions as a dict would, whatever the ids look like, and a row whose id is its
own position costs about a bit; `passed_on` reads them from a frontier."""

from __future__ import annotations

import random
import tracemalloc

from chainette.execution.rowids import POSITIONS
from chainette.frontier import Commit, Row
from chainette_ray.positions import RowPositions, passed_on

ROWS = 300_000


def random_row(rng: random.Random) -> tuple[str, int]:
    """A row id with its input position: its own position mostly, else a fan-out child's, a user's id or one that only
    looks like a position (another row's, "007", one past the bitmap's bound)."""
    index = rng.choice([rng.randrange(5000), rng.randrange(POSITIONS - 20, POSITIONS + 20)])
    kind = rng.random()
    if kind < 0.5:
        return str(index), index
    if kind < 0.7:
        return f"{index}-{rng.randrange(3)}", index
    if kind < 0.8:
        return str(rng.randrange(5000)), index
    return rng.choice(["007", "00", "-1", "x", "١٢", f"user-{index}"]), index


def test_random_rows_are_held_as_a_dict_holds_them():
    for seed in range(25):
        rng = random.Random(seed)
        positions, expected = RowPositions(), {}
        for _ in range(rng.randrange(1, 400)):
            row_id, index = random_row(rng)
            if row_id in expected:  # a frontier passes each id on once
                continue
            positions.add(row_id, index)
            expected[row_id] = index
            probe, _ = random_row(rng)
            assert (probe in positions) == (probe in expected), f"seed {seed}: {probe!r}"
        assert len(positions) == len(expected), f"seed {seed}"
        assert sorted(positions.items()) == sorted(expected.items()), f"seed {seed}"


def test_rows_passed_on_as_they_came_take_about_a_bit_each():
    tracemalloc.start()
    try:
        positions = RowPositions()
        for index in range(ROWS):
            positions.add(str(index), index)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(positions) == ROWS and str(ROWS - 1) in positions and str(ROWS) not in positions
    assert held < 2 * ROWS // 8 + 10_000, f"{held} bytes for {ROWS:,} rows"


def test_passed_on_reads_every_row_of_a_frontier(tmp_path):
    frontier = tmp_path / "step.jsonl"
    children = [Row("3-0", {}, "step", index=3, up=["3"]), Row("3-1", {}, "step", index=3, up=["3"])]
    commits = [Commit("0", [Row("0", {}, "step")]), Commit("1"), Commit("3", children), Commit("5", [Row("5", {}, "step", index=5)])]
    frontier.write_bytes(b"".join(commit.encode() for commit in commits))
    assert sorted(passed_on(frontier).items()) == [("0", 0), ("3-0", 3), ("3-1", 3), ("5", 5)]
    assert len(passed_on(tmp_path / "missing.jsonl")) == 0
