"""`chainette inspect CHAIN -i INPUTS --rows N`: every step's prompts rendered for the first rows, later steps with
placeholder answers made from the output models; only those rows are read, nothing is sent, no secret is printed."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

CHAIN = """from pydantic import BaseModel
from chainette import Branch, Chain, Step, apply, register_engine

class Review(BaseModel):
    text: str

class Label(BaseModel):
    label: str
    score: float

class Note(BaseModel):
    note: str

register_engine("llm", backend="fake", model="m", api_key="sk-planted-secret-0123456789")

def keep(item: Label) -> Label:
    raise AssertionError("inspect must not run an apply")

label = Step(id="label", input_model=Review, output_model=Label, engine_name="llm",
             system_prompt="You label reviews.", user_prompt="Review {{row_id}}: {{text}}")
twice = Branch(name="twice", steps=[Step(id="again", output_model=Note, engine_name="llm", user_prompt="Again: {{label.label}}")]).join("again_out")
final = Step(id="final", output_model=Note, engine_name="llm", output_format_instruction="",
             user_prompt="{{chain_input.text}} was {{keep.label}} ({{keep.score}}), then {{again_out.note}}")
chain = Chain(name="c", steps=[label, apply(keep), [twice], final])
"""


def inspect(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}
    command = [sys.executable, "-m", "chainette", "inspect", f"{project}/chain.py:chain", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "chain.py").write_text(CHAIN)
    lines = [json.dumps({"id": "a", "text": "Great kettle"}), json.dumps({"id": "b", "text": "sk-planted-secret-0123456789 leaked"})]
    (tmp_path / "in.jsonl").write_text("\n".join([*lines, '{"id": "a", broken', "not json at all"]) + "\n")
    return tmp_path


def test_the_first_rows_prompts_are_rendered_with_placeholders(project):
    done = inspect(project, "-i", str(project / "in.jsonl"), "--rows", "2", "--id-column", "id")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Prompts for the first 2 row(s)" in out and "Nothing was sent and no apply ran" in out
    assert "row a (" in out and "row b (" in out
    assert "  step label\n    system:\n      You label reviews.\n" in out
    assert "      Answer with a single JSON object and nothing else." in out, "the format instruction, as sent"
    assert "    user:\n      Review a: Great kettle\n" in out
    assert "  step again (placeholders here: label, keep)\n" in out
    assert "      Again: label " in out, "the placeholder answer of 'label' (its field's name, then drawn words)"
    final = out.split("row a (")[1].split("  step final (placeholders here: label, keep, again_out)\n")[1].split("\nrow b")[0]
    assert final.startswith("    user:\n      Great kettle was label "), "no system prompt: the format instruction is empty"
    assert "then note " in final
    assert "sk-planted-secret" not in out + done.stderr
    assert "**********" in out
    assert "broken" not in out and "not valid" not in out, "rows after the first 2 are not read"


def test_json_format_and_an_invalid_row(project):
    done = inspect(project, "-i", str(project / "in.jsonl"), "--rows", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [row["row_id"] for row in found["rows"]] == ["0", "1", "2"]
    assert found["rows"][0]["steps"][0]["messages"][-1] == {"role": "user", "content": "Review 0: Great kettle"}
    assert [step["step_id"] for step in found["rows"][0]["steps"]] == ["label", "again", "final"]
    assert found["rows"][2]["steps"] == [] and "in.jsonl:3" in found["rows"][2]["invalid"]
    assert "placeholder" in found["note"]


def test_a_prompt_that_cannot_render_is_shown_as_such(project):
    source = (
        (project / "chain.py")
        .read_text()
        .replace("{{keep.score}}", "{{keep.scor}}")
        .replace("def keep(item: Label) -> Label:", "def keep(item):")
    )
    (project / "chain.py").write_text(source.replace("apply(keep)", "apply(keep, output_model=Label)"))
    done = inspect(project, "-i", str(project / "in.jsonl"))
    assert done.returncode == 1 and "keep.scor" in done.stderr, "the static check refuses it when the model is known"
    (project / "chain.py").write_text(source)
    done = inspect(project, "-i", str(project / "in.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "  step final (placeholders here: label, keep, again_out)\n    cannot render the prompt:" in done.stdout
    assert "scor" in done.stdout.split("step final")[1]


def test_mermaid_with_inputs_is_refused(project):
    done = inspect(project, "-i", str(project / "in.jsonl"), "--format", "mermaid")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--inputs shows prompts as text" in done.stderr
