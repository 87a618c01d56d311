"""Text in square brackets (extras, paths, server log lines, names) is shown as it is by every rich view and by --help."""

from __future__ import annotations

import io

from pydantic import BaseModel
import pytest
from rich.console import Console

from chainette import Chain, Step, register_engine
from chainette.cli import main
from chainette.cli.app import _print_error
from chainette.cli.tree import chain_tree
from chainette.events import EngineChanged, RunStarted
from chainette.ui.live import render_state
from chainette.ui.state import RunState
from chainette.ui.summary import summary

from .test_cli import EXAMPLE

LOG_LINE = "INFO 01-01 10:00:00 [model.py:2152] Loading weights took 3.1 s"


class Review(BaseModel):
    text: str


class Label(BaseModel):
    label: str


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def shown(renderable) -> str:
    """`renderable` as a wide console without colours prints it."""
    console = Console(width=250, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def bracketed_chain() -> Chain:
    register_engine("llm[eu]", backend="fake", model="org/model[v2]")
    step = Step(id="label", input_model=Review, output_model=Label, engine_name="llm[eu]", user_prompt="{{text}}")
    return Chain(name="reviews[v2]", steps=[step])


def test_errors_and_hints_keep_their_brackets(tmp_path, capsys):
    code = main(["run", f"{EXAMPLE}/chain.py:chain", "-i", "runs/[exp]/a.jsonl", "-o", str(tmp_path / "o")])
    assert code == 1
    assert "runs/[exp]/a.jsonl" in capsys.readouterr().err
    _print_error(f'Install it with `pip install "chainette-vllm[serve]"`. Last lines of its log:\n    {LOG_LINE}\n[bold]not a style[/]')
    err = capsys.readouterr().err
    assert 'pip install "chainette-vllm[serve]"' in err
    assert LOG_LINE in err
    assert "[bold]not a style[/]" in err


def test_live_view_keeps_brackets_in_header_labels_and_engine_log():
    state = RunState()
    state(
        RunStarted(chain="reviews[v2]", output_dir="runs/[exp]/a", resumed=False, nodes=[{"id": "s", "kind": "step", "label": "└─ s[gpu]"}])
    )
    state(EngineChanged(engine="llm[eu]", state="starting", detail=LOG_LINE, at="2026-01-01T10:00:00.000+00:00"))
    text = shown(render_state(state, now=0.0))
    assert "chainette reviews[v2] → runs/[exp]/a" in text
    assert "└─ s[gpu]" in text
    assert f"10:00:00 engine llm[eu] starting ({LOG_LINE})" in text


def test_summary_and_tree_keep_brackets(tmp_path):
    chain = bracketed_chain()
    result = chain.run([{"text": "a"}], output_dir=tmp_path / "o")
    text = shown(summary(result.stats, "runs/[exp]/a"))
    assert "reviews[v2]: completed" in text
    assert "runs/[exp]/a/<node>/" in text
    tree = shown(chain_tree(chain))
    assert "reviews[v2]  (input: Review)" in tree
    assert "step label → Label  engine llm[eu] (fake: org/model[v2])" in tree


def test_backends_table_keeps_brackets_in_errors(install_plugin, capsys):
    install_plugin("chainette-needy", "needy", "needy_backend", "raise RuntimeError('install chainette-needy[gpu]')")
    assert main(["backends", "list"]) == 0
    assert "error: import failed: RuntimeError: install chainette-needy[gpu]" in capsys.readouterr().out


def test_help_text_keeps_brackets(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(needs chainette-core[parquet])" in out
    assert "hf:name[:config]:split" in out
