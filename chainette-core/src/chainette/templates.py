"""Prompt templates: one strict Jinja2 environment, a fast path for plain substitutions, and the
variables a template refers to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes

from chainette.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
Render = Callable[[Mapping[str, Any]], str]


@lru_cache(maxsize=512)
def compile_template(source: str) -> Render:
    """A function rendering `source` with a context.

    A template made only of text and `{{ name }}` / `{{ name.attr }}` substitutions renders without
    Jinja's per-call machinery (the same lookups and strictness); anything else goes through Jinja.
    """
    template = _ENV.from_string(source)
    parts = _plain_parts(_ENV.parse(source))
    if parts is None:
        return template.render
    return lambda context: "".join(part if isinstance(part, str) else _lookup(context, part) for part in parts)


def _plain_parts(tree: nodes.Template) -> list[str | tuple[str, ...]] | None:
    """Text pieces and lookup paths, or None when the template uses anything beyond plain substitution."""
    parts: list[str | tuple[str, ...]] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)
                continue
            path = _path(node)
            if path is None:
                return None
            parts.append(path)
    return parts


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        head = _path(node.node)
        return None if head is None else (*head, node.attr)
    return None


def _lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> str:
    try:
        value = context[path[0]]
    except KeyError:
        raise jinja2.UndefinedError(f"'{path[0]}' is undefined") from None
    for attr in path[1:]:
        value = _ENV.getattr(value, attr)
    return str(value)


def referenced_names(source: str, *, where: str) -> dict[str, set[str]]:
    """Each free variable of the template, with the attributes read from it (`{{a.b}}` → {"a": {"b"}})."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}.") from None
    names: dict[str, set[str]] = {name: set() for name in meta.find_undeclared_variables(tree)}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node, (nodes.Getattr, nodes.Getitem)) or not isinstance(node.node, nodes.Name) or node.node.name not in names:
            continue
        if isinstance(node, nodes.Getattr):
            names[node.node.name].add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names[node.node.name].add(node.arg.value)
    return names
