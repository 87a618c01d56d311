"""The viewer's search box: `field=value` (the field equals the value), `field~text` (the field contains the text), or
plain text (anywhere in the row); case-insensitive. A field is a key of the row, or a dotted path into nested objects."""

from __future__ import annotations

from collections.abc import Callable
import re
from typing import Any

import orjson

Match = Callable[[dict[str, Any]], bool]

_FIELD = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(=|~)(.*)$", re.DOTALL)


def matcher(query: str) -> Match | None:
    """A test of a row for `query`; None for an empty query (every row)."""
    query = query.strip()
    if not query:
        return None
    parsed = _FIELD.match(query)
    if parsed is None:
        needle = query.casefold()
        return lambda row: needle in orjson.dumps(row).decode().casefold()
    field, operator, wanted = parsed.group(1), parsed.group(2), parsed.group(3).strip().casefold()
    if operator == "=":
        return lambda row: any(_text(value) == wanted for value in _values(row, field))
    return lambda row: any(wanted in _text(value) for value in _values(row, field))


def _values(row: dict[str, Any], field: str) -> list[Any]:
    """The value of `field` in `row`: a key as written (flattened columns hold dots), else a dotted path; none if absent."""
    if field in row:
        return [row[field]]
    value: Any = row
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return []
        value = value[key]
    return [value]


def _text(value: Any) -> str:
    return (value if isinstance(value, str) else orjson.dumps(value).decode()).casefold()
