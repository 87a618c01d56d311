"""A run's identity covers each apply function's code: a resume after the function changed is refused (naming the
node), an unchanged function (or one whose comments alone changed) resumes, in a new process every time."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from chainette.codeprint import code_fingerprint

CHAIN = """from pydantic import BaseModel
from chainette import Chain, Step, apply, register_engine

class Text(BaseModel):
    text: str

class Label(BaseModel):
    label: str

register_engine("llm", backend="fake", model="m")

WORDS = {"alpha", "bravo", "charlie"}

def is_long(label: str) -> bool:
    return len(label) > 3

def keep(item: Label) -> Label | list[Label]:
    return item if is_long(item.label) and WORDS else []  # the body

label = Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="{{text}}")
chain = Chain(name="c", steps=[label, apply(keep)])
"""


def chainette(*args: str, seed: str = "random") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200", "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, "-m", "chainette", *args], capture_output=True, text=True, env=env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "chain.py").write_text(CHAIN)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(20)))
    return tmp_path


def run(project: Path, seed: str = "random") -> subprocess.CompletedProcess[str]:
    return chainette("run", f"{project}/chain.py:chain", "-i", str(project / "in.jsonl"), "-o", str(project / "out"), seed=seed)


def stop_during_keep(out: Path) -> None:
    """What a kill in the middle of apply 'keep' leaves: half its rows committed, no done marker."""
    frontier = out / ".chainette" / "keep.jsonl"
    frontier.write_text("".join(frontier.read_text().splitlines(keepends=True)[:10]))
    (out / ".chainette" / "keep.done").unlink()


def edit(project: Path, old: str, new: str) -> None:
    path = project / "chain.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("len(label) > 3", "len(label) > 30"),  # a helper of the same module
        ("and WORDS else", "and not WORDS else"),  # the body
        ('"charlie"}', '"delta"}'),  # a constant it reads
    ],
    ids=["helper", "body", "global-constant"],
)
def test_a_changed_apply_function_is_refused_on_resume(project, old, new):
    assert run(project, seed="1").returncode == 0
    stop_during_keep(project / "out")
    edit(project, old, new)
    done = run(project, seed="2")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "holds a run of a changed chain: 'keep' changed since it started" in message
    assert "pass --overwrite" in message
    assert len((project / "out" / ".chainette" / "keep.jsonl").read_text().splitlines()) == 10, "nothing was written"


def test_an_unchanged_or_recommented_function_resumes(project):
    assert run(project, seed="1").returncode == 0
    stop_during_keep(project / "out")
    edit(project, "# the body", "# the body, commented again")
    edit(project, "def is_long", "# a new comment line shifting every line below\ndef is_long")
    done = run(project, seed="2")
    assert done.returncode == 0, done.stderr
    keep = [json.loads(line) for line in (project / "out" / "keep" / "000.jsonl").read_text().splitlines()]
    assert sorted(int(line["row_id"]) for line in keep) == list(range(20)), "every row exactly once"


def test_the_fingerprint_is_the_same_in_every_process():
    script = (
        "from chainette.codeprint import code_fingerprint\n"
        "SET = {'x', 'y', 'z', 'w'}\n"
        "def f(row):\n    return row in {'a', 'b', 'c', 'd'} or row in SET or (lambda v: v * 2)(row)\n"
        "print(code_fingerprint(f))\n"
    )
    prints = {
        subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True).stdout
        for seed in ("0", "1", "2", "3")
    }
    assert len(prints) == 1 and len(next(iter(prints)).strip()) == 32


def compiled(source: str) -> object:
    """The function `f` that `source` defines, in a module namespace of its own."""
    namespace: dict[str, object] = {"__name__": "user_module"}
    exec(source, namespace)
    return namespace["f"]


def test_nested_code_defaults_and_closures_count():
    base = "def f(threshold=3):\n    return lambda row: row > threshold\n"
    same = "def f(threshold=3):\n    # a comment\n\n    return lambda row: row > threshold\n"
    nested = "def f(threshold=3):\n    return lambda row: row >= threshold\n"
    default = "def f(threshold=4):\n    return lambda row: row > threshold\n"
    assert code_fingerprint(compiled(base)) == code_fingerprint(compiled(same))
    assert len({code_fingerprint(compiled(source)) for source in (base, nested, default)}) == 3
    make = compiled(base)
    assert code_fingerprint(make(3)) != code_fingerprint(make(4)), "a closure's value counts"  # type: ignore[operator]


def test_callable_objects_partials_and_self_holding_containers():
    source = "import functools\nLOOP = []\nLOOP.append(LOOP)\nclass Keep:\n    def __init__(self, at):\n        self.at = at\n    def __call__(self, row):\n        return row > self.at and LOOP\ndef f(row, at):\n    return row > at\n"
    namespace: dict[str, object] = {"__name__": "user_module"}
    exec(source, namespace)
    keep, f = namespace["Keep"], namespace["f"]
    assert code_fingerprint(keep(1)) == code_fingerprint(keep(1)) != code_fingerprint(keep(2))  # type: ignore[operator]
    partial = __import__("functools").partial
    assert code_fingerprint(partial(f, at=1)) == code_fingerprint(partial(f, at=1)) != code_fingerprint(partial(f, at=2))
