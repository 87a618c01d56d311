"""What a run reports as it goes: typed events, and the bus reporters subscribe to.

The executor emits; the live view, the plain-line log and the JSON log (chainette.ui) listen.
Every event turns into one JSON object with `to_json` for machine-readable logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
import re
from typing import Any


@dataclass(frozen=True)
class Event:
    """Base of every event; `at` is when it happened (UTC, ISO 8601)."""

    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"), kw_only=True)

    @property
    def name(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def to_json(self) -> dict[str, Any]:
        return {"event": self.name, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    chain: str
    output_dir: str
    resumed: bool
    nodes: list[dict[str, Any]]


@dataclass(frozen=True)
class NodeStarted(Event):
    """A node begins; `total` is how many rows it receives (None while unknown: the node before has not finished
    yet; a NodeCounted event says it later), `done` how many of them earlier sessions already decided."""

    node: str
    kind: str
    total: int | None
    done: int = 0


@dataclass(frozen=True)
class NodeCounted(Event):
    """The node before has finished, so how many rows a node receives over the whole run is known: `total`."""

    node: str
    total: int


@dataclass(frozen=True)
class NodeFinished(Event):
    """A node ends this session: `complete` when it decided all its rows, False when the run was stopped first."""

    node: str
    stats: dict[str, Any]
    complete: bool = True


@dataclass(frozen=True)
class RowFailed(Event):
    node: str
    row_id: str
    error_type: str
    message: str


@dataclass(frozen=True)
class EngineChanged(Event):
    """An engine is `starting`, `ready` (with its URL), `stopped`, or `released` (its server keeps running; `detail` says why)."""

    engine: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class BatchChanged(Event):
    """A step's batch job (`batch`: its id) is in a new `state` (validating, in_progress, completed, ...), with counts."""

    node: str
    batch: str
    state: str
    completed: int = 0
    failed: int = 0
    total: int = 0


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should know that stops nothing, such as the response cache turned off (`message` says why)."""

    message: str


@dataclass(frozen=True)
class Progress(Event):
    """A snapshot of every node's figures (see chainette.stats.NodeStats.snapshot), sent periodically."""

    nodes: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class RunFinished(Event):
    status: str
    summary: dict[str, Any]


Listener = Callable[[Event], None]


class EventBus:
    """Delivers each event to every listener, in order of subscription, with every string in it cleared of `secrets`."""

    def __init__(self, listeners: list[Listener] | None = None, secrets: frozenset[str] = frozenset()):
        self.listeners = list(listeners or [])
        self.secrets = secrets

    def emit(self, event: Event) -> None:
        if self.secrets:
            event = _redacted(event, self.secrets)
        for listener in self.listeners:
            listener(event)


def _redacted(event: Event, secrets: frozenset[str]) -> Event:
    from chainette.secrets import redact_data

    return replace(event, **{f.name: redact_data(getattr(event, f.name), secrets) for f in fields(event) if f.name != "at"})
