"""RowIds holds (and gives back) the same ids as a set would, whatever they look like: positions in its bitmap, any
other id as it is."""

from __future__ import annotations

import random
import tracemalloc

from chainette.execution.rowids import POSITIONS, RowIds

LOOK_ALIKES = ["0", "00", "01", "007", "-1", "+1", " 1", "1 ", "1.0", "1e3", "", "١٢", "²", "12-0", "12-0-3", "x", str(POSITIONS - 1)]
LOOK_ALIKES += [str(POSITIONS), "9" * 9, "9" * 10, "1" + "0" * 30]


def random_id(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return str(rng.randrange(5000))
    if kind < 0.7:
        return f"{rng.randrange(500)}-{rng.randrange(3)}"
    if kind < 0.8:
        return str(rng.randrange(POSITIONS - 50, POSITIONS + 50))
    return rng.choice(LOOK_ALIKES)


def test_random_ids_are_held_as_a_set_holds_them():
    for seed in range(50):
        rng = random.Random(seed)
        ids, expected = RowIds(), set()
        for _ in range(rng.randrange(1, 400)):
            row_id = random_id(rng)
            ids.add(row_id)
            expected.add(row_id)
            probe = random_id(rng)
            assert (probe in ids) == (probe in expected), f"seed {seed}: {probe!r}"
        assert len(ids) == len(expected), f"seed {seed}"
        probes = [random_id(rng) for _ in range(20)]
        assert ids.isdisjoint(probes) == expected.isdisjoint(probes), f"seed {seed}"
        assert all(row_id in ids for row_id in expected)
        assert sorted(ids) == sorted(expected), f"seed {seed}"


def test_a_million_positions_take_about_a_bit_each():
    tracemalloc.start()
    try:
        ids = RowIds(str(position) for position in range(1_000_000))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == 1_000_000 and "999999" in ids and "1000000" not in ids
    assert held < 2 * 1_000_000 // 8 + 10_000, f"{held} bytes for a million positions"


def test_the_bitmap_never_outgrows_its_bound():
    ids = RowIds([str(POSITIONS // 2), str(POSITIONS - 1)])
    assert str(POSITIONS - 1) in ids and len(ids._bits) == POSITIONS // 8
