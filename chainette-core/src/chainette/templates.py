"""Prompt templates: one strict, sandboxed Jinja2 environment, a fast path for plain substitutions, and the
variables a template refers to.

Templates render in Jinja's immutable sandbox: an internal attribute (`__class__`, `_private`), a method that
changes a list or dict, or an unsafe call raises `jinja2.exceptions.SecurityError`, in the fast path too.
Row values are only ever substituted, never rendered as templates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chainette.errors import ConfigError

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
Render = Callable[[Mapping[str, Any]], str]
_DICT_ATTRIBUTES = frozenset(dir(dict))


@lru_cache(maxsize=512)
def compile_template(source: str) -> Render:
    """A function rendering `source` with a context.

    A template made only of text and `{{ name }}` / `{{ name.attr }}` substitutions renders without
    Jinja's per-call machinery (the same sandboxed lookups and strictness); anything else goes through Jinja.
    """
    template = _ENV.from_string(source)
    parts = _plain_parts(_ENV.parse(source))
    if parts is None:
        return template.render
    return lambda context: "".join([part if isinstance(part, str) else _lookup(context, part) for part in parts])


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
    """The value at `path` as text, each attribute read through the sandbox (an unsafe one raises SecurityError)."""
    try:
        value = context[path[0]]
    except KeyError:
        raise jinja2.UndefinedError(f"'{path[0]}' is undefined") from None
    for attr in path[1:]:
        # a dict's key that names no dict attribute: what the sandbox gives, without the AttributeError it raises first
        direct = type(value) is dict and attr in value and attr not in _DICT_ATTRIBUTES
        value = value[attr] if direct else _ENV.getattr(value, attr)
    return str(value)


def referenced_names(source: str, *, where: str) -> dict[str, set[str]]:
    """Each free variable of the template, with the attributes read from it (`{{a.b}}` → {"a": {"b"}})."""
    tree = _parse(source, where)
    names: dict[str, set[str]] = {name: set() for name in meta.find_undeclared_variables(tree)}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node, (nodes.Getattr, nodes.Getitem)) or not isinstance(node.node, nodes.Name) or node.node.name not in names:
            continue
        if isinstance(node, nodes.Getattr):
            names[node.node.name].add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names[node.node.name].add(node.arg.value)
    return names


def refuse_internal_attributes(source: str, *, where: str) -> None:
    """Raise ConfigError (its message starting with `where`) when the template names an internal attribute
    (`x.__class__`, `x['__init__']`, `x|attr('__dict__')`): the sandbox would refuse it on every row."""
    for node in _parse(source, where).find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        for name in _attribute_names(node):
            if name.startswith("__"):
                raise ConfigError(
                    f"{where}: the template reads the internal attribute '{name}' (on its line {node.lineno}). Prompts render in a "
                    "sandbox that refuses internal attributes, so no row could render it: remove it."
                )


def _attribute_names(node: nodes.Node) -> list[str]:
    """The attribute names `node` reads when they are written in the template: `a.b`, `a['b']`, `a|attr('b')`."""
    if isinstance(node, nodes.Getattr):
        return [node.attr]
    if isinstance(node, nodes.Getitem):
        args = [node.arg]
    elif isinstance(node, nodes.Filter) and node.name == "attr":
        args = list(node.args)
    else:
        return []
    return [arg.value for arg in args if isinstance(arg, nodes.Const) and isinstance(arg.value, str)]


def _parse(source: str, where: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}.") from None
