"""The run's writer: appends wait in memory and go out once per event-loop iteration, or at a flush or close
when no loop runs (the flattened table is written that way, in a few large writes)."""

from __future__ import annotations

import asyncio
import os

import pytest

from chainette.errors import ChainetteError
from chainette.run.appends import LineFile, OutputFolder, Writer


def test_appends_go_out_at_the_end_of_the_loop_iteration(tmp_path):
    path = tmp_path / "log.jsonl"

    async def append_then_yield() -> tuple[bytes, bytes]:
        file = LineFile(Writer(), path)
        file.write({"i": 0})
        before = path.read_bytes()
        await asyncio.sleep(0)
        after = path.read_bytes()
        file.close()
        return before, after

    assert asyncio.run(append_then_yield()) == (b"", b'{"i":0}\n')


def test_with_no_loop_appends_wait_for_the_close(tmp_path):
    path = tmp_path / "table.jsonl"
    file = LineFile(Writer(), path)
    for index in range(3):
        file.write({"i": index})
    assert path.read_bytes() == b"", "one write per line would be one system call per line"
    file.close()
    assert path.read_text().splitlines() == ['{"i":0}', '{"i":1}', '{"i":2}']


def test_a_refused_write_keeps_what_waited_and_the_file_takes_more_while_the_error_is_held(tmp_path):
    path = tmp_path / "log.jsonl"
    file = LineFile(Writer(), path)
    file.write({"i": 0})
    appended = file._file
    assert appended._fd is not None
    os.close(appended._fd)  # every write is refused from now on, as on a full disk
    with pytest.raises(ChainetteError, match="Cannot write the run's files") as refused:
        appended.writer.flush()
    file.write({"i": 1})  # while the error (and its traceback) is still held, as when the run reports it
    appended._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    file.close()
    assert refused.value is not None
    assert path.read_text().splitlines() == ['{"i":0}', '{"i":1}']


def test_output_lines_roll_to_a_new_file_every_rows_per_file_lines_one_by_one_or_in_a_batch(tmp_path):
    folder = OutputFolder(Writer(), tmp_path, rows_per_file=3)
    folder.write({"i": 0})
    folder.write_lines([b'{"i":%d}\n' % index for index in range(1, 8)])
    folder.write_line(b'{"i":8}\n')
    folder.close()
    files = sorted(tmp_path.glob("*.jsonl"))
    assert [path.name for path in files] == ["000.jsonl", "001.jsonl", "002.jsonl"]
    assert [[int(line[5:-1]) for line in path.read_text().splitlines()] for path in files] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
