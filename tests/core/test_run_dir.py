"""The run directory has one owner: a second process is refused while a run holds it (kill -9 leaves no stale lock),
an empty path is refused, --overwrite deletes only a run, a file or a link as -o is one paragraph, and a node
cannot take a name the run directory uses itself."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, ChainetteError, ConfigError, Step, apply, register_engine
from chainette.hub import push
from chainette.run.rundir import STATE_DIR
from chainette.runlock import RunLock, holder

ROWS = 20

HELD_CHAIN = """
import asyncio
import os
from pathlib import Path
from pydantic import BaseModel
from chainette import Chain, Step, apply, register_engine

class Row(BaseModel):
    text: str

class Label(BaseModel):
    label: str

async def gate(row: Label) -> Label:
    # Holds the run open until the test creates the file $GATE.
    while not Path(os.environ["GATE"]).exists():
        await asyncio.sleep(0.01)
    return row

register_engine("llm", backend="fake", model="m")
chain = Chain(name="held", steps=[
    Step(id="first", input_model=Row, output_model=Label, engine_name="llm", user_prompt="{{text}}"),
    apply(gate),
])
"""


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


class Project:
    """A chain whose run waits for a gate file, an input file and an output directory, run through the CLI."""

    def __init__(self, root: Path):
        self.root = root
        self.chain = root / "held.py"
        self.chain.write_text(textwrap.dedent(HELD_CHAIN))
        self.inputs = root / "in.jsonl"
        self.inputs.write_text("".join(json.dumps({"text": f"row{i}"}) + "\n" for i in range(ROWS)))
        self.out = root / "out1"

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "chainette", "run", f"{self.chain}:chain", "-i", str(self.inputs), "-o", str(self.out), *extra]

    def env(self, gate: Path) -> dict[str, str]:
        return {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200", "GATE": str(gate)}

    def start(self, gate: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(), env=self.env(gate), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, gate: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*extra), env=self.env(gate), capture_output=True, text=True, timeout=120)

    def wait_until_working(self, process: subprocess.Popen[str]) -> None:
        """Until the run has written outputs of its first step (its rows then wait at the gate)."""
        deadline = time.monotonic() + 60
        while not any(path.stat().st_size for path in (self.out / "first").glob("*.jsonl")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the first run never got to work"
            time.sleep(0.01)

    def row_ids(self, node: str) -> list[str]:
        return [json.loads(line)["row_id"] for path in sorted((self.out / node).glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_a_second_run_on_a_directory_in_use_is_refused_naming_the_holder(tmp_path):
    project = Project(tmp_path)
    closed, opened = tmp_path / "gate", tmp_path / "open"
    opened.touch()
    first = project.start(closed)
    try:
        project.wait_until_working(first)
        second = project.run(opened)
        assert second.returncode == 1, second.stdout
        assert f"Output directory {project.out} is in use by a chainette run (pid {first.pid} on host" in second.stderr
        assert "this one did not start and changed nothing" in second.stderr
        assert "Traceback" not in second.stderr
        overwrite = project.run(opened, "--overwrite")
        assert overwrite.returncode == 1 and "is in use by a chainette run" in overwrite.stderr
        retry = project.run(opened, "--retry-errors")
        assert retry.returncode == 1 and "is in use by a chainette run" in retry.stderr
        assert (project.out / STATE_DIR / "manifest.json").exists(), "--overwrite deleted nothing"
    finally:
        closed.touch()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    for node in ("first", "gate", "flattened"):
        assert sorted(project.row_ids(node), key=int) == [str(i) for i in range(ROWS)], f"{node}: one line per row"


def test_after_kill_9_of_the_holder_the_next_run_resumes(tmp_path):
    project = Project(tmp_path)
    closed, opened = tmp_path / "gate", tmp_path / "open"
    opened.touch()
    first = project.start(closed)
    project.wait_until_working(first)
    assert holder(project.out / STATE_DIR) is not None
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert holder(project.out / STATE_DIR) is None, "the kernel dropped the lock of the killed process"
    again = project.run(opened)
    assert again.returncode == 0, again.stderr
    assert "in use" not in again.stderr
    assert sorted(project.row_ids("flattened"), key=int) == [str(i) for i in range(ROWS)]


def label_chain() -> Chain:
    register_engine("e", backend="fake", model="m")
    return Chain(name="c", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="e", user_prompt="{{text}}")])


def test_a_held_directory_refuses_overwrite_retry_and_push_and_batches_names_the_run(tmp_path, capsys):
    from chainette.cli import main

    chain = label_chain()
    out = tmp_path / "out"
    chain.run([{"text": "a"}], output_dir=out, progress=False)
    with RunLock(out / STATE_DIR, "a chainette run"):
        for options in ({"overwrite": True}, {"retry_errors": True}, {}):
            with pytest.raises(ChainetteError, match=rf"Output directory {out} is in use by a chainette run \(pid {os.getpid()}"):
                chain.run([{"text": "a"}], output_dir=out, progress=False, **options)
        assert (out / "label" / "000.jsonl").exists(), "--overwrite deleted nothing"
        with pytest.raises(ChainetteError, match="is in use by a chainette run"):
            push(out, "org/name", dry_run=tmp_path / "dry")
        assert not (tmp_path / "dry").exists()
        assert main(["batches", str(out)]) == 0
        assert f"a chainette run (pid {os.getpid()} on host" in capsys.readouterr().err
    assert chain.run([{"text": "a"}], output_dir=out, progress=False, overwrite=True)["label"], "released: usable again"
    assert main(["batches", str(out)]) == 0
    assert "working in" not in capsys.readouterr().err


def test_a_push_holds_the_directory_while_it_reads_it(tmp_path, monkeypatch):
    import chainette.hub as hub

    chain = label_chain()
    out = tmp_path / "out"
    chain.run([{"text": "a"}], output_dir=out, progress=False)
    seen = []

    def write_folder(dataset, folder):
        with pytest.raises(ChainetteError, match=r"is in use by a chainette push"):
            chain.run([{"text": "a"}], output_dir=out, progress=False)
        seen.append(folder)

    monkeypatch.setattr(hub, "write_folder", write_folder)
    push(out, "org/name", dry_run=tmp_path / "dry")
    assert seen == [tmp_path / "dry"]


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder holding a chain file and its input (as a user's project would), the cwd of the commands."""
    Project(tmp_path)
    (tmp_path / "gate").touch()
    return tmp_path


def run_in(project: Path, output: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`chainette run held.py:chain -i in.jsonl -o OUTPUT` in `project`, its gate open."""
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200", "GATE": str(project / "gate")}
    command = [sys.executable, "-m", "chainette", "run", "held.py:chain", "-i", "in.jsonl", "-o", output, *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=project, timeout=120)


def assert_one_paragraph(done: subprocess.CompletedProcess[str], text: str) -> None:
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert text in " ".join(done.stderr.split()), done.stderr


@pytest.mark.parametrize("extra", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_an_empty_output_path_is_refused_and_deletes_nothing(project, extra):
    done = run_in(project, "", *extra)
    assert_one_paragraph(done, "The output directory (-o) is empty ('')")
    assert sorted(path.name for path in project.iterdir()) == ["gate", "held.py", "in.jsonl"], "nothing deleted, nothing written"


def test_an_empty_output_dir_is_refused_by_the_python_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"Output directory is empty \(''\)"):
        label_chain().run([{"text": "a"}], output_dir="", progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ChainetteError, match=r"The run directory is empty \(''\)"):
        push("", "org/name", dry_run=tmp_path / "dry")


@pytest.mark.parametrize("output", [".", "notes"], ids=["cwd", "folder"])
def test_overwrite_deletes_only_a_run_directory(project, output):
    (project / "notes").mkdir()
    (project / "notes" / "mine.txt").write_text("keep me")
    done = run_in(project, output, "--overwrite")
    assert_one_paragraph(done, "is not empty and holds no chainette run (no .chainette/manifest.json): --overwrite")
    assert "nothing was deleted" in done.stderr
    assert (project / "notes" / "mine.txt").read_text() == "keep me"
    assert (project / "held.py").exists() and not (project / STATE_DIR).exists()


def test_overwrite_replaces_a_run_and_an_empty_directory_is_used(project):
    (project / "empty").mkdir()
    assert run_in(project, "empty").returncode == 0
    (project / "empty" / "label").mkdir()
    (project / "empty" / "label" / "stale.txt").write_text("left by hand in a run directory")
    done = run_in(project, "empty", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert not (project / "empty" / "label").exists()
    assert (project / "empty" / "first" / "000.jsonl").exists()


@pytest.mark.parametrize("target", ["file", "/dev/null"])
def test_output_naming_a_file_is_one_paragraph(project, target):
    (project / "file").write_text("data")
    for extra in ((), ("--overwrite",)):
        done = run_in(project, target, *extra)
        assert_one_paragraph(done, f"Output directory {target} is not a directory")
    assert (project / "file").read_text() == "data"


def test_output_under_a_file_is_one_paragraph(project):
    (project / "file").write_text("data")
    assert_one_paragraph(run_in(project, "file/out"), "Output directory file/out is not writable: Not a directory")


def test_a_symlink_is_run_into_but_never_overwritten_through(project):
    (project / "real").mkdir()
    (project / "link").symlink_to(project / "real")
    assert run_in(project, "link").returncode == 0
    assert (project / "real" / "first" / "000.jsonl").exists()
    assert run_in(project, "link").returncode == 0, "a run reached through a link resumes"
    done = run_in(project, "link", "--overwrite")
    assert_one_paragraph(done, f"Output directory link is a symbolic link (to {project / 'real'}): --overwrite")
    assert (project / "real" / "first" / "000.jsonl").exists() and (project / "link").is_symlink()
    (project / "dangling").symlink_to(project / "nowhere")
    assert_one_paragraph(run_in(project, "dangling"), f"is a symbolic link to {project / 'nowhere'}, which does not exist")


def test_a_node_cannot_take_a_name_the_run_directory_uses(tmp_path):
    register_engine("e", backend="fake", model="m")

    def step(id: str) -> Step:
        return Step(id=id, input_model=Text, output_model=Label, engine_name="e", user_prompt="{{text}}")

    with pytest.raises(ConfigError, match=r"The step 'flattened' has a name the run directory keeps for its own entry \(OUT/flattened\)"):
        Chain(name="c", steps=[step("flattened")])

    def logs(row: Label) -> Label:
        return row

    with pytest.raises(ConfigError, match=r"The apply 'logs' has a name the run directory keeps"):
        Chain(name="c", steps=[step("label"), apply(logs)])
    with pytest.raises(ConfigError, match=r"The join alias 'flattened' has a name") as refused:
        Chain(name="c", steps=[[Branch(name="b", steps=[step("label")]).join("flattened")]])
    assert refused.value.loc == ("join",)


def test_a_holder_that_has_not_written_itself_down_yet_is_still_refused(tmp_path):
    import fcntl

    state = tmp_path / "out" / STATE_DIR
    state.mkdir(parents=True)
    with open(state / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ChainetteError, match=r"is in use by another chainette process \(which has just started\)"):
            RunLock(state, "a chainette run")
        assert holder(state) is not None


def test_a_file_system_that_refuses_locks_refuses_the_run(tmp_path, monkeypatch):
    import errno

    import chainette.runlock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(chainette.runlock.fcntl, "flock", no_locks)
    with pytest.raises(ChainetteError, match=r"Cannot lock output directory .*this file system refused the lock"):
        label_chain().run([{"text": "a"}], output_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "label").exists()


def test_a_run_dir_this_process_may_not_write_to_is_pushed_when_no_run_holds_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    label_chain().run([{"text": "a"}], output_dir=out, progress=False)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only copy (chmod binds no root)
    with RunLock(out / STATE_DIR, "a chainette run"), pytest.raises(ChainetteError, match="is in use by a chainette run"):
        push(out, "org/name", dry_run=tmp_path / "dry")
    assert "flattened" in push(out, "org/name", dry_run=tmp_path / "dry").configs
    assert "a chainette push" not in (out / STATE_DIR / "lock").read_text(), "no lock was taken"
