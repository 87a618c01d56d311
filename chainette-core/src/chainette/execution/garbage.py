"""The garbage collector's pace during a session. A session allocates a few container objects per row and step (rows,
contexts, answers), nearly all freed at once by reference counting; at CPython's default pace (a young collection every
700 allocations) the collector still scans them tens of times a second. While any session runs, a young collection
comes every `YOUNG_EVERY` allocations instead; the pace the process had is restored when the last session ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import gc

YOUNG_EVERY = 10_000

_sessions = 0
_before: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def session_pace() -> Iterator[None]:
    """Collect young objects every `YOUNG_EVERY` allocations (at least) while the block runs."""
    global _sessions, _before
    if not _sessions:
        _before = gc.get_threshold()
        young, *older = _before
        if young:  # 0: the process turned collection off
            gc.set_threshold(max(young, YOUNG_EVERY), *older)
    _sessions += 1
    try:
        yield
    finally:
        _sessions -= 1
        if not _sessions:
            gc.set_threshold(*_before)
