"""A block's scratch folder is named after its worker process; a sweep removes those whose process has ended, and no other."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import tempfile

import pytest

from chainette_ray import scratch


@pytest.fixture
def temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder, moved to the test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def ended_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_scratch_folder_is_named_after_its_process_and_removed_after(temporary):
    with scratch.folder() as made:
        assert Path(made).parent == temporary
        assert Path(made).name.startswith(f"{scratch.PREFIX}{os.getpid()}-")
    assert not Path(made).exists()


def test_the_sweep_removes_the_folders_of_ended_processes_only(temporary):
    ended = temporary / f"{scratch.PREFIX}{ended_pid()}-abc"
    (ended / "run").mkdir(parents=True)
    (ended / "run" / "errors.jsonl").write_text("{}\n")
    own = temporary / f"{scratch.PREFIX}{os.getpid()}-def"
    unnamed = temporary / f"{scratch.PREFIX}x1y2z3"
    other = temporary / "someone-else-123-abc"
    for folder in (own, unnamed, other):
        folder.mkdir()
    scratch.sweep()
    assert not ended.exists()
    assert own.exists() and unnamed.exists() and other.exists()
