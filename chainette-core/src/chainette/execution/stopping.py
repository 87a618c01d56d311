"""Stopping a run: the first Ctrl-C or SIGTERM stops taking rows, lets those in flight finish and keeps every
finished row; a second Ctrl-C (or DRAIN_SECONDS later) cancels at once. The run can then be resumed. Work done
side by side (a step's workers, a group's branches) stops as a whole when one part of it fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
import signal
import threading
from typing import TypeVar

from chainette.errors import RunInterrupted

DRAIN_SECONDS = 30.0
T = TypeVar("T")


class StopSignal:
    """Once `stop` is called, nodes take no new rows (rows in flight still finish) and engine start-ups are cancelled."""

    def __init__(self) -> None:
        self.stopping: str | None = None
        self.exit_code = 130
        self._on_stop: list[Callable[[], None]] = []

    def stop(self, reason: str, exit_code: int) -> None:
        if self.stopping is None:
            self.stopping, self.exit_code = reason, exit_code
            for callback in self._on_stop:
                callback()

    def check(self) -> None:
        """Raise RunInterrupted if the run is stopping."""
        if self.stopping:
            raise self.interrupted()

    def interrupted(self) -> RunInterrupted:
        return RunInterrupted(self.stopping or "Interrupted", self.exit_code)

    @contextmanager
    def cancellable(self) -> Iterator[threading.Event]:
        """An event set when the run stops or the awaiting task is cancelled, for work running in a thread."""
        event = threading.Event()
        self._on_stop.append(event.set)
        if self.stopping:
            event.set()
        try:
            yield event
        except asyncio.CancelledError:
            event.set()
            raise
        finally:
            self._on_stop.remove(event.set)


@contextmanager
def stop_on_signals(control: StopSignal) -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM stop the run through `control`. Only in the main thread, where signal handlers live."""
    task = asyncio.current_task()
    if threading.current_thread() is not threading.main_thread() or task is None:
        yield
        return
    loop = asyncio.get_running_loop()

    def on_signal(reason: str, exit_code: int) -> None:
        if control.stopping:
            task.cancel()
            return
        control.stop(reason, exit_code)
        loop.call_later(DRAIN_SECONDS, task.cancel)

    loop.add_signal_handler(signal.SIGINT, on_signal, "Interrupted (Ctrl-C)", 130)
    loop.add_signal_handler(signal.SIGTERM, on_signal, "Stopped by SIGTERM", 143)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def with_resume_hint(error: RunInterrupted, output_dir: Path) -> RunInterrupted:
    """`error` with what was kept and how to resume."""
    message = (
        f"{error}: requests in flight were finished, engines stopped, and every finished row is saved in {output_dir}. "
        "Run the same command again (same chain, inputs and output directory) to resume."
    )
    return RunInterrupted(message, error.exit_code)


async def first_failure_cancels(work: list[Awaitable[T]]) -> list[T]:
    """The results of `work`, run side by side; the first failure cancels the rest at once (waiting until each has
    ended, so that none goes on behind the caller's back) and is raised."""
    tasks = [asyncio.ensure_future(part) for part in work]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
