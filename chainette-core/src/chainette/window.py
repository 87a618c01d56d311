"""An engine's window: how many of its requests may be in flight at once.

The rules it keeps:

- never more requests in flight than the window allows, and the window never above `ceiling` (the engine's
  max_concurrency) nor below one;
- fixed (`adaptive=False`): the window is the ceiling, always;
- adaptive: it starts at the ceiling; an overload answer (a 429, a 503 or 529, a timeout) halves it, and latency
  risen to twice its long-run average (the recent average against one that follows slow changes, such as longer
  answers later in an input), once that average has seen WARM_UP answers and by at least MIN_RISE seconds (no cut on
  the jitter of answers that take milliseconds), narrows it by a tenth; either at most once a round trip (only an answer to a request sent
  after the last cut cuts again, as TCP does). Every other answer widens it by 1/window, so by one a round trip, back up
  to the ceiling. Latency is compared with its own long-run average, not with the best seen: a batching GPU server
  answers each request more slowly with more in flight, yet serves more in all.
"""

from __future__ import annotations

import asyncio
from collections import deque
import contextlib

LATENCY_RISE = 2.0  # a recent latency this many times the long-run average narrows the window
RECENT, LONG_RUN = 0.1, 0.01  # the weight of each answer's latency in the recent and in the long-run average
OVERLOAD_CUT, LATENCY_CUT = 0.5, 0.9  # what an overload answer, and a rise of latency, leave of the window
WARM_UP = round(1 / LONG_RUN)  # answers before the long-run average means anything
MIN_RISE = 0.05  # seconds: a rise of latency smaller than this is jitter, not a server queueing


class Window:
    """Admits requests to one engine within its window (see the module docstring); `enter` before a request is sent,
    `leave` once it is answered, with `answered` or `overloaded` saying how."""

    def __init__(self, ceiling: int, adaptive: bool):
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.size = float(ceiling)
        self.allowed = ceiling  # requests that may be in flight now: the size, whole, at least one
        self.in_flight = 0
        self.sent = 0  # requests let through so far: the number `enter` returns
        self.latency: float | None = None  # the recent average of answers' latency, in seconds
        self.long_run: float | None = None  # the long-run average
        self.answers = 0
        self._cut_after = 0  # `sent` when the window was last cut: only answers to later requests cut it again
        self._waiting: deque[asyncio.Future[None]] = deque()

    def take(self) -> int:
        """Take room in the window at once, when it has some and no request waits before: the request's number, for
        `overloaded`; else 0, and `enter` waits for room."""
        if self.in_flight < self.allowed and not self._waiting:
            self.in_flight += 1
            self.sent += 1
            return self.sent
        return 0

    async def enter(self) -> int:
        """Wait for room in the window, then take it; the request's number, for `overloaded`."""
        if number := self.take():
            return number
        room = asyncio.get_running_loop().create_future()
        self._waiting.append(room)
        try:
            await room  # `_admit` takes the room for the request before waking it
        except asyncio.CancelledError:
            if room.done() and not room.cancelled():
                self.leave()
            with contextlib.suppress(ValueError):
                self._waiting.remove(room)
            raise
        self.sent += 1
        return self.sent

    def leave(self) -> None:
        """A request let in is answered (or failed): its room goes to the next one waiting."""
        self.in_flight -= 1
        self._admit()

    def answered(self, number: int, seconds: float) -> None:
        """Request `number` was answered in `seconds`: narrow an adaptive window if latency has risen, else widen it."""
        if not self.adaptive:
            return
        self.latency = recent = seconds if self.latency is None else self.latency + RECENT * (seconds - self.latency)
        self.long_run = usual = seconds if self.long_run is None else self.long_run + LONG_RUN * (seconds - self.long_run)
        self.answers += 1
        if self.answers >= WARM_UP and recent > LATENCY_RISE * usual and recent - usual >= MIN_RISE:
            self._cut(number, LATENCY_CUT)
        elif self.size < self.ceiling:
            self._resize(min(float(self.ceiling), self.size + 1 / self.size))
            self._admit()

    def overloaded(self, number: int) -> None:
        """Request `number` got an overload answer: halve an adaptive window."""
        if self.adaptive:
            self._cut(number, OVERLOAD_CUT)

    def _cut(self, number: int, keep: float) -> None:
        """Leave `keep` of the window, unless request `number` was sent before the last cut (once a round trip)."""
        if number > self._cut_after:
            self._cut_after = self.sent
            self._resize(max(1.0, self.size * keep))

    def _resize(self, size: float) -> None:
        """Make the window `size` wide (and `allowed` its whole part, at least one)."""
        self.size = size
        self.allowed = max(1, int(size))

    def _admit(self) -> None:
        """Let waiting requests in while there is room, taking it for each."""
        while self._waiting and self.in_flight < self.allowed:
            room = self._waiting.popleft()
            if not room.done():
                self.in_flight += 1
                room.set_result(None)
