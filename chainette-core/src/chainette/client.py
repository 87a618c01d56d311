"""The async client contract every backend implements, and the values it exchanges with the core."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pydantic import BaseModel


Message = dict[str, Any]
"""A chat message: `role`, and `content`, a string, or, when the user prompt places media, a list of parts:
`{"type": "text", "text": str}` and `{"type": "media", "field": str, "reference": dict}` (the media's reference, see
`chainette.media`; its bytes are read by the backend as it builds the request: `chainette.media.read_bytes`)."""


def content_text(content: str | list[dict[str, Any]]) -> str:
    """A message's content as text to read: each media part as `[image photo: its path or URL]`."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] if part["type"] == "text" else _media_text(part) for part in content)


def _media_text(part: dict[str, Any]) -> str:
    reference = part["reference"]
    return f"[{reference['media']} {part['field']}: {reference.get('path') or reference.get('url')}]"


@dataclass(slots=True)
class Request:
    """One chat request: rendered messages, the JSON schema the answer must follow, translated sampling.

    `output_model` is the pydantic model `schema` was made from, for a backend whose SDK converts models itself
    (the openai backend's strict schemas); None when a request is built from a bare schema."""

    messages: list[Message]
    schema: dict[str, Any]
    schema_name: str
    sampling: dict[str, Any] = field(default_factory=dict)
    step_id: str = ""
    row_id: str = ""
    output_model: type[BaseModel] | None = None


@dataclass(slots=True)
class Usage:
    """Token counts reported by the backend (0 when it reports none). `input_tokens` counts the input billed at the
    full price: input read from the provider's prompt cache (`cache_read_tokens`) and written to it
    (`cache_write_tokens`) are counted apart (chainette.pricing)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        """Every token of the request, whatever its price (what a tokens-per-minute limit counts)."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(slots=True)
class Answer:
    """The model's raw answer text (validated by the core), its reasoning text if any, and usage; `alternatives`
    holds the other candidates when the request asked the server for several (`n` on the wire), `usage` then
    counting the whole request. `cut_off`: the server stopped it before its end (the token limit, a repetition check),
    so the core keeps the answer only if it is valid as it is (a complete answer may end exactly at the limit)."""

    text: str
    reasoning: str | None = None
    usage: Usage = field(default_factory=Usage)
    alternatives: list[Answer] = field(default_factory=list)
    cut_off: bool = False


@runtime_checkable
class Client(Protocol):
    """What `make_client` returns. `complete` may be called concurrently; failures raise `BackendError`s."""

    async def complete(self, request: Request) -> Answer:
        """Send one request and return the answer, or raise RetryableError, RowError or EngineError."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, after the engine's last request."""
        ...
