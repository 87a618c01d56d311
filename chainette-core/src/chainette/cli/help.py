"""Help screens in the conventions users know: flags without a value type, arguments as NAME or [NAME]."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder


def _untyped_flags(params: list[Any]) -> list[Any]:
    """`params`, with every flag's `<bool>` type label blanked: a flag takes no value."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Group(TyperGroup):
    """A typer group whose flags (--debug, --help) show no `<bool>`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Command(TyperCommand):
    """A typer command whose flags show no `<bool>` and whose usage line reads `run [OPTIONS] CHAIN`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def use_plain_help(app: typer.Typer) -> None:
    """Give `app`, its commands and its groups, plugins' included, the plain help, unless one chose its own class."""
    if isinstance(app.info.cls, DefaultPlaceholder):
        app.info.cls = Group
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            use_plain_help(group.typer_instance)
