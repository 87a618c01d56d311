"""A step's prompts: its templates compiled once, and the chat messages they render for a row (the step's format
instruction, by default the one made from its output model, appended to the system prompt)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError

from chainette.errors import RowError
from chainette.frontier import Row
from chainette.nodes import Step
from chainette.policy import TEMPLATE_KIND
from chainette.schema import format_instruction
from chainette.templates import Render, compile_template


@dataclass(frozen=True)
class Prompts:
    """The compiled system and user templates of a step, and its format instruction ("" for none)."""

    system: Render | None
    user: Render
    instruction: str

    @classmethod
    def of(cls, step: Step) -> Prompts:
        instruction = step.output_format_instruction
        return cls(
            compile_template(step.system_prompt) if step.system_prompt else None,
            compile_template(step.user_prompt),
            format_instruction(step.output_model) if instruction is None else instruction,
        )

    def messages(self, row: Row) -> list[dict[str, str]]:
        """The chat messages for `row`: its direct input's fields, every context entry and `row_id` are the templates'
        names. A prompt that cannot render (an undefined name, a sandbox refusal) raises a RowError of kind template
        naming it."""
        direct = row.ctx[row.direct]
        context = {**direct, **row.ctx, "row_id": row.row_id} if isinstance(direct, dict) else {**row.ctx, "row_id": row.row_id}
        system = _render("system_prompt", self.system, context) if self.system else ""
        user = _render("user_prompt", self.user, context)
        if self.instruction:
            system = f"{system}\n\n{self.instruction}" if system else self.instruction
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return messages


def _render(key: str, template: Render, context: dict[str, Any]) -> str:
    """The prompt `key` rendered with `context`; a RowError (kind template) when it cannot be."""
    try:
        return template(context)
    except SecurityError as exc:
        raise RowError(f"cannot render the {key}: {exc} Prompts render in a sandbox that refuses it.", kind=TEMPLATE_KIND) from None
    except Exception as exc:
        raise RowError(f"cannot render the {key}: {exc}", kind=TEMPLATE_KIND) from None
