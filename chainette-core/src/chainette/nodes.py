"""The things a chain is made of: steps (one LLM call), applies (Python functions), branches.

These are declarations only; `chainette.executor` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
import re
from typing import Any, Literal

from pydantic import BaseModel

from chainette.errors import ConfigError
from chainette.sampling import SamplingParams, as_sampling

INPUT_ID = "chain_input"  # the id of the chain's input, as node outputs and templates name it
RESERVED_NAMES = frozenset({INPUT_ID, "row_id"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(kind: str, value: str) -> str:
    """`value` if usable as a template variable and folder name, else a ConfigError."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or value in RESERVED_NAMES:
        raise ConfigError(
            f"{kind} {value!r} is not a valid id: use letters, digits and '_' (not starting with a digit), "
            f"and not one of {', '.join(sorted(RESERVED_NAMES))}."
        )
    return value


@dataclass(kw_only=True, eq=False)
class Step:
    """One LLM call per row: prompts rendered from the row's context, answer validated against `output_model`.
    `sampling` may be given as a mapping of SamplingParams fields: it is converted (and checked) here."""

    id: str
    output_model: type[BaseModel]
    engine_name: str
    user_prompt: str
    name: str | None = None
    input_model: type[BaseModel] | None = None
    sampling: SamplingParams | None = None
    system_prompt: str = ""
    output_format_instruction: str | None = None
    yield_output: bool = True
    cache: bool | Literal["refresh"] = True

    def __post_init__(self) -> None:
        check_identifier("Step id", self.id)
        self.sampling = as_sampling(self.sampling, f"Step '{self.id}'")
        if self.cache not in (True, False, "refresh"):
            raise ConfigError(f"Step '{self.id}': cache must be True, False or 'refresh', not {self.cache!r}.")
        if not (isinstance(self.output_model, type) and issubclass(self.output_model, BaseModel)):
            raise ConfigError(f"Step '{self.id}': output_model must be a pydantic BaseModel class, not {self.output_model!r}.")
        self.name = self.name or self.id


@dataclass(kw_only=True, eq=False)
class Apply:
    """A plain Python function over each row: `fn(item)` returns an item or a list (0 = filter, 2+ = fan out)."""

    fn: Callable[[Any], Any]
    id: str
    input_model: type[BaseModel] | None = None
    output_model: type[BaseModel] | None = None
    yield_output: bool = True

    def __post_init__(self) -> None:
        check_identifier("apply id", self.id)


def apply(
    fn: Callable[[Any], Any],
    *,
    id: str | None = None,
    input_model: type[BaseModel] | None = None,
    output_model: type[BaseModel] | None = None,
) -> Apply:
    """Wrap `fn` as a chain node; its id defaults to the function's name."""
    name: str = getattr(fn, "__name__", "apply")
    return Apply(fn=fn, id=id or name, input_model=input_model, output_model=output_model)


@dataclass(eq=False)
class Branch:
    """A sequence of nodes run beside others in a parallel group; `join(alias)` exposes its final output."""

    name: str
    steps: list[Any] = field(default_factory=list)
    alias: str | None = None
    declared: Branch | None = field(default=None, repr=False)  # the branch the user declared, when this is chainette's copy

    def join(self, alias: str) -> Branch:
        """A copy of this branch whose final output later steps read as `{{alias.field}}`."""
        return replace(self, alias=check_identifier("join alias", alias))


@dataclass(eq=False)
class Parallel:
    """A group of branches that all receive the same rows."""

    branches: list[Branch]


Node = Step | Apply | Parallel
