"""A pass's blocks are cut from the input as it is read, or from the input frontier as it grows: the first is ready while
the input is still being read, at most READY wait for a worker, and every row wanted reaches one block, in order."""

from __future__ import annotations

import asyncio
import random

import orjson

from chainette.execution.feed import Feed
from chainette.execution.stopping import StopSignal
from chainette.frontier import Commit, Row
from chainette.inputs import RawRow, from_objects
from chainette.nodes import INPUT_ID
from chainette.run.appends import LineFile, Writer
from chainette_ray.block import RawBlock
from chainette_ray.blocks import READY, Blocks, InputRows, frontier_rows, pack_lines, pack_read


class Input:
    """An input frontier being written, as the driver's input stage writes it."""

    def __init__(self, tmp_path, control: StopSignal):
        self.writer = Writer()
        path = tmp_path / f"{INPUT_ID}.jsonl"
        self.file = LineFile(self.writer, path)
        self.feed = Feed(path, self.file, control)
        self.writer.flushed.append(self.feed.release)

    def commit(self, index: int) -> None:
        row = Row(str(index), {INPUT_ID: {"text": f"row {index}"}}, INPUT_ID, index=index)
        self.feed.passed([row], self.file.commit(Commit(row.row_id, [row])))

    def finish(self) -> None:
        self.writer.flush()
        self.feed.close()


def ids(block: tuple[bytes | RawBlock, int]) -> list[str]:
    lines, count = block
    assert isinstance(lines, bytes)
    found = [orjson.loads(line)["source"] for line in lines.splitlines()]
    assert len(found) == count
    return found


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_first_block_is_ready_while_the_input_is_read_and_no_more_than_ready_wait(tmp_path):
    async def scenario() -> None:
        control = StopSignal()
        source = Input(tmp_path, control)
        blocks = Blocks(frontier_rows(source.feed, control, lambda row_id, index: index % 5 != 4), pack_lines, control, 3)
        filling = asyncio.ensure_future(blocks.fill())
        for index in range(4):
            source.commit(index)
        source.writer.flush()
        await settle()
        first = blocks.take()
        assert first is not None and ids(first) == ["0", "1", "2"], "a full block is handed on before the input ends"
        assert not blocks.finished
        for index in range(4, 40):
            source.commit(index)
        source.writer.flush()
        await settle()
        assert len(blocks.ready) == READY, "blocks made wait for a worker, at most READY of them"
        taken = [first]
        source.finish()
        while not filling.done() or blocks.ready:
            block = blocks.take()
            if block is not None:
                taken.append(block)
            await settle()
        await filling
        assert blocks.finished
        assert [row_id for block in taken for row_id in ids(block)] == [str(i) for i in range(40) if i % 5 != 4]

    asyncio.run(scenario())


def test_rows_written_at_random_moments_each_reach_one_block_in_order(tmp_path):
    async def scenario(seed: int) -> None:
        rng = random.Random(seed)
        control = StopSignal()
        source = Input(tmp_path / str(seed), control)
        skip = rng.choice([None, *range(2, 7)])  # None: every row is wanted
        wanted = None if skip is None else lambda row_id, index: index % skip != 0
        blocks = Blocks(frontier_rows(source.feed, control, wanted), pack_lines, control, rng.randint(1, 7))
        filling = asyncio.ensure_future(blocks.fill())
        taken: list[str] = []
        count = rng.randint(0, 200)
        for index in range(count):
            source.commit(index)
            if rng.random() < 0.2:
                source.writer.flush()
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            while rng.random() < 0.5 and (block := blocks.take()) is not None:
                taken += ids(block)
        source.finish()
        while not filling.done() or blocks.ready:
            block = blocks.take()
            if block is not None:
                taken += ids(block)
            await asyncio.sleep(0)
        expected = [str(index) for index in range(count) if skip is None or index % skip]
        assert taken == expected, f"seed {seed}: a row lost, out of order or twice"

    for seed in range(30):
        (tmp_path / str(seed)).mkdir()
        asyncio.run(scenario(seed))


def test_rows_as_read_each_reach_one_block_in_order_with_their_positions_up_to_the_limit():
    async def scenario(seed: int) -> None:
        rng = random.Random(seed)
        control = StopSignal()
        count, limit = rng.randint(0, 300), rng.choice([None, rng.randint(0, 300)])
        skip = rng.choice([None, *range(2, 7)])
        wanted = None if skip is None else lambda row_id, index: row_id == str(index) and index % skip != 0
        counted: list[int] = []
        source = InputRows(from_objects({"n": n} for n in range(count)), limit, counted.append)
        blocks = Blocks(source.wanted(control, wanted), pack_read, control, rng.randint(1, 40))
        filling = asyncio.ensure_future(blocks.fill())
        taken: list[RawRow] = []
        while not filling.done() or blocks.ready:
            block = blocks.take()
            if block is not None:
                rows, size = block
                assert isinstance(rows, RawBlock) and len(rows.positions) == size
                taken += rows.raw_rows()
            await asyncio.sleep(0)
        read = count if limit is None else min(count, limit)
        expected = [n for n in range(read) if skip is None or n % skip]
        assert [row.position for row in taken] == expected, f"seed {seed}: a row lost, out of order or twice"
        assert [row.value["n"] for row in taken] == expected and all(row.where == f"inputs[{row.position}]" for row in taken)
        assert counted == [read] and source.limited == (limit is not None and count > limit)

    for seed in range(40):
        asyncio.run(scenario(seed))
