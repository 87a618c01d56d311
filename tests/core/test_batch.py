"""chainette.batch: custom ids, splitting lines into files at a provider's limits, and the journal read back after a
kill (a line cut short is ignored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainette.batch import BatchJournal, ChunkWriter, custom_id, parse_custom_id, row_ids_of


def test_custom_ids_carry_the_row_even_with_dashes_in_its_id():
    assert parse_custom_id(custom_id("q", 0, "a-1-b")) == ("q", 0, "a-1-b")
    assert parse_custom_id(custom_id("r", 3, "7")) == ("r", 3, "7")
    with pytest.raises(ValueError):
        parse_custom_id("x-0-7")


def sizes(tmp_path, lines, max_requests, max_bytes) -> list[int]:
    """The line counts of the files a ChunkWriter makes of `lines`."""
    journal = BatchJournal(tmp_path / f"w{max_requests}-{max_bytes}-{len(lines)}")
    out = ChunkWriter(journal, 0, max_requests, max_bytes)
    out.write(lines)
    out.close()
    return [len(chunk.path.read_text().splitlines()) for chunk in out.chunks]


def test_lines_are_split_at_the_request_and_byte_limits(tmp_path):
    lines = [{"custom_id": str(i), "body": "x" * 50} for i in range(10)]
    assert sizes(tmp_path, lines, 4, 10**6) == [4, 4, 2]
    size = len(json.dumps(lines[0])) + 1
    assert sizes(tmp_path, lines, 100, 3 * size) == [3, 3, 3, 1]
    assert sizes(tmp_path, lines[:2], 100, 1) == [1, 1], "a line longer than the limit goes alone"
    assert sizes(tmp_path, [], 4, 100) == []


def written(folder, lines: list[dict]) -> Path:
    """A batch file of `lines`, written as a ChunkWriter writes one, not journaled yet."""
    path = folder / "next.jsonl.part"
    path.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    return path


def test_the_journal_reads_back_every_chunk_and_ignores_a_line_cut_by_a_kill(tmp_path):
    journal = BatchJournal(tmp_path / "step")
    chunk = journal.add(0, written(journal.folder, [{"custom_id": custom_id("q", 0, str(i))} for i in range(3)]), 3)
    journal.record(chunk, file_id="file-1")
    journal.record(chunk, batch_id="batch_1", state="submitted")
    second = journal.add(1, written(journal.folder, [{"custom_id": custom_id("r", 0, "2")}]), 1)
    journal.record(second, done=True)
    with open(journal.path, "a") as cut:
        cut.write('{"chunk": "001-00001", "batch_')

    again = BatchJournal(tmp_path / "step")
    [open_chunk] = again.open_chunks()
    assert (open_chunk.name, open_chunk.file_id, open_chunk.batch_id, open_chunk.state) == (chunk.name, "file-1", "batch_1", "submitted")
    assert row_ids_of(open_chunk) == {"0", "1", "2"}
    assert again.last_round == 1 and again.chunks[second.name].done


def test_a_chunk_writer_keeps_no_line_in_memory(tmp_path):
    """Lines go to disk as they are written (a line with media holds their bytes): what the writer holds is a count."""
    journal = BatchJournal(tmp_path / "step")
    writer = ChunkWriter(journal, 0, max_requests=100, max_bytes=10**9)
    writer.write([{"custom_id": custom_id("q", 0, str(i)), "body": "x" * 1000} for i in range(50)])
    assert writer.part.stat().st_size > 40_000 and not journal.chunks, "on disk but a write buffer, not journaled yet"
    assert not any(isinstance(value, list) and value for value in vars(writer).values() if value is not writer.chunks)
    writer.close()
    [chunk] = writer.chunks
    assert chunk.lines == 50 and not writer.part.exists() and len(row_ids_of(chunk)) == 50
