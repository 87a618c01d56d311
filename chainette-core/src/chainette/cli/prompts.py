"""How `chainette inspect --inputs` prints the rendered prompts: readable text, or JSON."""

from __future__ import annotations

from dataclasses import asdict
import json
import textwrap

from chainette.client import content_text
from chainette.preview import RenderedStep, RowPrompts

NOTE = (
    "Nothing was sent and no apply ran: after the input, every step's answer and every apply's output is a placeholder "
    "made from its output model (an apply without one passes its input on)."
)


def prompts_text(found: list[RowPrompts], source: str) -> str:
    """Each row's steps with their system and user prompts, indented under them, after a line saying what is real."""
    lines = [f"Prompts for the first {len(found)} row(s) of {source}.", NOTE]
    for row in found:
        lines += ["", f"row {row.row_id} ({row.where})"]
        if row.invalid is not None:
            lines.append(f"  not valid input: {row.invalid}")
        for step in row.steps:
            lines += _step_lines(step)
    return "\n".join(lines)


def _step_lines(step: RenderedStep) -> list[str]:
    placeholders = f" (placeholders here: {', '.join(step.placeholders)})" if step.placeholders else ""
    lines = [f"  step {step.step_id}{placeholders}"]
    if step.error is not None:
        return [*lines, f"    {step.error}"]
    for message in step.messages or []:
        lines += [f"    {message['role']}:", textwrap.indent(content_text(message["content"]), "      ")]
    return lines


def prompts_json(found: list[RowPrompts]) -> str:
    """The rows as a JSON list (each with its steps' messages), with the note on placeholders."""
    return json.dumps({"note": NOTE, "rows": [asdict(row) for row in found]}, indent=2, ensure_ascii=False)
