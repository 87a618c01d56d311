"""Prompt templates: one strict Jinja2 environment, and the variables a template refers to."""

from __future__ import annotations

from functools import lru_cache

import jinja2
from jinja2 import meta, nodes

from chainette.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=512)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template for `source` (cached)."""
    return _ENV.from_string(source)


def referenced_names(source: str, *, where: str) -> dict[str, set[str]]:
    """Each free variable of the template, with the attributes read from it (`{{a.b}}` → {"a": {"b"}})."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}.") from None
    names: dict[str, set[str]] = {name: set() for name in meta.find_undeclared_variables(tree)}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node.node, nodes.Name) or node.node.name not in names:
            continue
        if isinstance(node, nodes.Getattr):
            names[node.node.name].add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names[node.node.name].add(node.arg.value)
    return names
