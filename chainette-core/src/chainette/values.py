"""What a row's values must be for its lines to be written. The rule: every number is one JSON holds and the run's files
can store, so a row is never written altered (orjson would write NaN as null) nor stops the run (it refuses integers
beyond 64 bits): a finite float, an integer within [-2**63, 2**64).
"""

from __future__ import annotations

import math
from typing import Any

SMALLEST, LARGEST = -(2**63), 2**64 - 1


def unwritable(value: Any) -> tuple[str, int | float] | None:
    """The place (`score`, `scores[2]`, `meta.p`) and value of the first number in `value` a line cannot hold, or None."""
    if _writable(value):
        return None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        place, item = stack.pop()
        if _bad_number(item):
            return place, item
        if isinstance(item, dict):
            stack.extend((f"{place}.{key}" if place else str(key), child) for key, child in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{place}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


def why(number: int | float) -> str:
    """Why a line cannot hold `number`, for an error message."""
    if isinstance(number, float):
        return f"{number}, not a finite number: outputs are JSON, which has no NaN or Infinity"
    return f"{number}, an integer beyond 64 bits, which the run's files cannot store"


def _writable(value: Any) -> bool:
    """Whether every number in `value` can be written: the per-row check, which names no place (plain JSON types only, as
    `model_dump(mode="json")` gives them, compared by exact type for speed)."""
    items = [value]
    for item in items:  # the loop reaches the items appended while it runs
        kind = type(item)
        if kind is str:
            continue
        if kind is dict:
            items.extend(item.values())
        elif kind is list or kind is tuple:
            items.extend(item)
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is int and not SMALLEST <= item <= LARGEST:
            return False
    return True


def _bad_number(item: Any) -> bool:
    if isinstance(item, float):
        return not math.isfinite(item)
    return isinstance(item, int) and not isinstance(item, bool) and not SMALLEST <= item <= LARGEST
