"""When a request marks its system prompt for Anthropic's prompt cache (`cache_control` on the last system block).

A cache write costs 1.25 times the input price and a read at most 0.1 times, so marking pays only for a prefix that will be
read again. A prefix is marked when it is long enough for the model's minimum (estimated at CHARS_PER_TOKEN
characters a token) and this client has sent it before: a system prompt shared by a step's rows is written by its
second request and read by the others; one that differs on every row is never marked, so never paid for at 1.25x.
"""

from __future__ import annotations

from collections import OrderedDict
import hashlib
from typing import Any

CHARS_PER_TOKEN = 4  # a rough estimate of English text, to tell whether a prefix reaches the cache's minimum
CACHE_MINIMUM = 1024  # tokens of a prefix Anthropic caches at least, for most models (their prompt caching guide)
CACHE_MINIMUMS = {"claude-opus-4-5": 4096, "claude-haiku-4-5": 4096, "claude-3-5-haiku": 2048, "claude-3-haiku": 2048}
REMEMBERED = 4096  # prefixes a client remembers having sent, the most recent
EPHEMERAL = {"type": "ephemeral"}  # the 5-minute cache


def cache_minimum(model: str) -> int:
    """The shortest prefix, in tokens, Anthropic caches for `model` (a dated id counts as its family)."""
    return next((tokens for family, tokens in CACHE_MINIMUMS.items() if model.startswith(family)), CACHE_MINIMUM)


class PromptCache:
    """The marking decisions of one client, for `model`'s minimum."""

    def __init__(self, model: str):
        self.minimum = cache_minimum(model)
        self._sent: OrderedDict[bytes, None] = OrderedDict()

    def mark(self, tools: str, system: list[dict[str, Any]]) -> None:
        """Mark the last of the `system` text blocks for the cache if the prefix of `tools` (their JSON) then `system`
        is to be."""
        if system and self._pays(tools, "\n".join(block["text"] for block in system)):
            system[-1]["cache_control"] = dict(EPHEMERAL)

    def _pays(self, tools: str, system: str) -> bool:
        """Whether the prefix of `tools` (their JSON) then `system` (the system text) is to be marked for the cache."""
        if (len(tools) + len(system)) // CHARS_PER_TOKEN < self.minimum:
            return False
        key = hashlib.blake2b(f"{tools}\0{system}".encode(), digest_size=16).digest()
        if key in self._sent:
            self._sent.move_to_end(key)
            return True
        self._sent[key] = None
        if len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)
        return False
