"""Reading the OpenAI chat-completions wire format, shared by the backends that speak it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainette.client import Usage


def parse_usage(report: Any) -> Usage:
    """The token counts of an OpenAI `usage` object (a JSON mapping); zeros for what it lacks or when it is not one."""
    if not isinstance(report, Mapping):
        return Usage()
    return Usage(input_tokens=report.get("prompt_tokens") or 0, output_tokens=report.get("completion_tokens") or 0)
