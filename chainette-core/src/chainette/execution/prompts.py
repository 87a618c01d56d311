"""A step's prompts: its templates compiled once, and the chat messages they render for a row (the step's format
instruction, by default the one made from its output model, appended to the system prompt).

Media placed by the user prompt (`Read this receipt: {{photo}}`, `{{pages}}` for a list, `{{chain_input.photo}}`)
make its content a list of parts, `{"type": "text", "text"}` and `{"type": "media", "field", "reference"}` (see
`chainette.client.Message`), in the order the template puts them; media the user prompt does not name are not sent.
A prompt without media renders to the same plain string as ever."""

from __future__ import annotations

from dataclasses import dataclass
import re
import secrets
from typing import Any

from jinja2.exceptions import SecurityError
from pydantic import BaseModel

from chainette.errors import RowError
from chainette.frontier import Row
from chainette.media import is_reference, media_fields
from chainette.nodes import INPUT_ID, Step
from chainette.policy import TEMPLATE_KIND
from chainette.schema import format_instruction
from chainette.templates import Render, compile_template, referenced_names

_NONCE = secrets.token_hex(8)
_MARK = re.compile(f"\x00media(\\d+)-{_NONCE}\x00")


@dataclass(frozen=True)
class Prompts:
    """The compiled system and user templates of a step, and its format instruction ("" for none)."""

    system: Render | None
    user: Render
    instruction: str
    names: dict[str, frozenset[str]]
    """The names the templates read, with the attributes read from each: where media can be placed."""

    @classmethod
    def of(cls, step: Step) -> Prompts:
        instruction = step.output_format_instruction
        names = referenced_names(step.user_prompt, where=f"Step '{step.id}': user_prompt")
        if step.system_prompt:
            for name, attributes in referenced_names(step.system_prompt, where=f"Step '{step.id}': system_prompt").items():
                names[name] = names.get(name, set()) | attributes
        return cls(
            compile_template(step.system_prompt) if step.system_prompt else None,
            compile_template(step.user_prompt),
            format_instruction(step.output_model) if instruction is None else instruction,
            {name: frozenset(attributes) for name, attributes in names.items()},
        )

    def messages(self, row: Row) -> list[dict[str, Any]]:
        """The chat messages for `row`: its direct input's fields, every context entry and `row_id` are the templates'
        names. A prompt that cannot render (an undefined name, a sandbox refusal, media in the system prompt) raises a
        RowError of kind template naming it."""
        direct = row.ctx[row.direct]
        context = {**direct, **row.ctx, "row_id": row.row_id} if isinstance(direct, dict) else {**row.ctx, "row_id": row.row_id}
        placed = _MediaMarks(context, self.names)
        system = _render("system_prompt", self.system, placed.context) if self.system else ""
        user = _render("user_prompt", self.user, placed.context)
        if self.instruction:
            system = f"{system}\n\n{self.instruction}" if system else self.instruction
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        if placed.parts:
            if _MARK.search(system):
                raise RowError("cannot render the system_prompt: media can be placed in the user_prompt only", kind=TEMPLATE_KIND)
            messages.append({"role": "user", "content": placed.split(user)})
        else:
            messages.append({"role": "user", "content": user})
        return messages


class _Marks(list[str]):
    """A list of media marks, rendered as the marks one after the other (`{{pages}}` places every page in order)."""

    def __str__(self) -> str:
        return "".join(self)


class _MediaMarks:
    """The template context with each media reference the templates place replaced by a mark (text that cannot occur
    in a row), and the media part each mark stands for. A reference whose fields the template reads (`{{photo.path}}`)
    is left as it is: that template writes about the media, it does not place it."""

    def __init__(self, context: dict[str, Any], names: dict[str, frozenset[str]]):
        self.parts: list[dict[str, Any]] = []
        self.context = context
        for name, attributes in names.items():
            value = context.get(name)
            if type(value) is not dict and type(value) is not list:
                continue  # text or a number: no media in it
            marked = value if attributes else self._marked(name, value)
            if marked is not value:
                self.context = {**self.context, name: marked}
            elif type(value) is dict and attributes and not is_reference(value):
                changed = self._marked_fields(name, value, attributes)
                if changed:
                    self.context = {**self.context, name: {**value, **changed}}

    def _marked_fields(self, name: str, value: dict[str, Any], attributes: frozenset[str]) -> dict[str, Any]:
        """The fields `attributes` of `value` (read as `name.attribute`) that hold media, each replaced by its marks."""
        changed = {}
        for attribute in attributes:
            item = value.get(attribute)
            if type(item) is dict or type(item) is list:  # text or a number: no media in it
                marked = self._marked(f"{name}.{attribute}", item)
                if marked is not item:
                    changed[attribute] = marked
        return changed

    def _marked(self, field: str, value: Any) -> Any:
        if is_reference(value):
            return self._mark(field, value)
        if type(value) is list and value and all(is_reference(item) for item in value):
            return _Marks(self._mark(f"{field}[{index}]", item) for index, item in enumerate(value))
        return value

    def _mark(self, field: str, reference: dict[str, Any]) -> str:
        self.parts.append({"type": "media", "field": field, "reference": reference})
        return f"\x00media{len(self.parts) - 1}-{_NONCE}\x00"

    def split(self, text: str) -> list[dict[str, Any]]:
        """The content parts of a rendered text: its text between marks, and the media each mark stands for."""
        content: list[dict[str, Any]] = []
        start = 0
        for found in _MARK.finditer(text):
            if found.start() > start:
                content.append({"type": "text", "text": text[start : found.start()]})
            content.append(self.parts[int(found[1])])
            start = found.end()
        if start < len(text):
            content.append({"type": "text", "text": text[start:]})
        return content


def placed_media(step: Step, chain_input: type[BaseModel] | None) -> dict[str, str]:
    """The kind of each media field `step`'s user prompt places (`photo`, or `chain_input.photo`), by its name there:
    the fields of its input model (else the chain's) and the chain input's fields read through `chain_input`."""
    direct = media_fields(step.input_model or chain_input)
    through = media_fields(chain_input)
    placed = {}
    for name, attributes in referenced_names(step.user_prompt, where=f"Step '{step.id}': user_prompt").items():
        if name in direct and not attributes:
            placed[name] = direct[name]
        if name == INPUT_ID:
            placed.update({f"{name}.{attribute}": through[attribute] for attribute in sorted(attributes) if attribute in through})
    return placed


def _render(key: str, template: Render, context: dict[str, Any]) -> str:
    """The prompt `key` rendered with `context`; a RowError (kind template) when it cannot be."""
    try:
        return template(context)
    except SecurityError as exc:
        raise RowError(f"cannot render the {key}: {exc} Prompts render in a sandbox that refuses it.", kind=TEMPLATE_KIND) from None
    except Exception as exc:
        raise RowError(f"cannot render the {key}: {exc}", kind=TEMPLATE_KIND) from None
