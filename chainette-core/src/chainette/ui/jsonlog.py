"""Machine-readable logs: one JSON object per event and line, for schedulers and log collectors."""

from __future__ import annotations

import sys
from typing import TextIO

import orjson

from chainette.events import Event


class JsonLines:
    """Writes every event (progress snapshots included, every `interval` seconds) as one JSON line."""

    interval = 1.0

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(orjson.dumps(event.to_json()).decode() + "\n")
        self.out.flush()
