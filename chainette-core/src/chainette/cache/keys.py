"""What a response cache key is made of: what the server would see, in a canonical form, hashed.

A key covers the backend, the model, the engine options that shape answers (not the endpoint, keys, limits or
timeouts: two replicas of one model share their answers), the rendered messages, the schema, the translated
sampling fields and the sample's index. A media part counts by its media type and the sha256 of its bytes (its URL
when it has no hash), never by its path or its base64: two rows with the same text and different images are two
entries, and one image at two paths is one. When sampling is not deterministic (a temperature other than 0 and no
seed), the row's id is in the key too: each row keeps its own sample, and rows whose prompts render alike do
not all get one answer on the next run.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from chainette.engines import EngineConfig, EngineOptions
from chainette.sampling import SamplingParams


def canonical(data: Any) -> bytes:
    """`data` as JSON with sorted keys: equal data, equal bytes."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def engine_identity(config: EngineConfig[EngineOptions]) -> dict[str, Any]:
    """The backend, the model and the options that shape answers (those the options class does not call `cache_neutral`)."""
    options = config.options
    neutral = type(options).cache_neutral
    shaping = {name: value for name, value in options.model_dump(mode="json").items() if name not in neutral}
    return {"backend": config.backend, "model": config.model, "options": shaping}


def deterministic(sampling: SamplingParams | None) -> bool:
    """Whether a request gets the same answer each time it is sent: temperature 0, or a seed."""
    return sampling is not None and (sampling.temperature == 0 or sampling.seed is not None)


class RequestKeys:
    """The keys of one step's requests: the part every row shares (engine, schema, sampling) is hashed once, and so is
    the first message while rows repeat it (a system prompt and format instruction are most of what is hashed)."""

    def __init__(self, identity: dict[str, Any], schema: dict[str, Any], schema_name: str, sampling: dict[str, Any], per_row: bool):
        self.shared = hashlib.sha256(canonical([identity, schema, schema_name, sampling]))
        self.per_row = per_row
        self._lead: tuple[dict[str, Any], hashlib._Hash] | None = None  # the last first message, and the digest up to it

    def key(self, messages: list[dict[str, Any]], sample: int, row_id: str) -> bytes:
        """The key of sample `sample` of the request with `messages`, made for the row `row_id`: the sha256 of the
        shared part followed by `canonical([messages, sample, row_id or None])`."""
        for message in messages:  # a loop rather than any(): no generator made for each key
            if type(message["content"]) is list:
                messages = [{**message, "content": _content_identity(message["content"])} for message in messages]
                break
        tail = [sample, row_id if self.per_row else None]
        if len(messages) == 1:
            digest = self.shared.copy()
            digest.update(canonical([messages, *tail]))
        else:
            digest = self._after(messages[0]).copy()
            digest.update(canonical([messages[1:], *tail])[2:])  # its `[[` is hashed with the first message
        return digest.digest()

    def _after(self, first: dict[str, Any]) -> hashlib._Hash:
        """The digest of the shared part followed by the opening of `canonical([messages, ...])` up to the second
        message: `[[`, the first message, a comma (kept while the next rows' first message is the same)."""
        lead = self._lead
        if lead is None or lead[0] != first:
            digest = self.shared.copy()
            digest.update(b"[[" + canonical(first) + b",")
            self._lead = lead = (dict(first), digest)  # a copy: the rows' messages are theirs
        return lead[1]


def _content_identity(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A message's content as its key sees it: each media part as its media type and hash (or URL)."""
    if isinstance(content, str):
        return content
    return [part if part["type"] != "media" else _media_identity(part["reference"]) for part in content]


def _media_identity(reference: dict[str, Any]) -> dict[str, Any]:
    seen = {"sha256": reference["sha256"]} if reference.get("sha256") else {"url": reference.get("url")}
    return {"type": "media", "media_type": reference["media_type"], **seen}
