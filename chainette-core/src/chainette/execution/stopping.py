"""Stopping a run: the first Ctrl-C or SIGTERM stops taking rows, lets those in flight finish and keeps every
finished row; a second Ctrl-C (or DRAIN_SECONDS later) cancels at once, dropping the requests still in flight
(their rows stay undecided). The run can then be resumed. Work done side by side (a step's workers, a group's
branches) stops as a whole when one part of it fails."""

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
    """Once `stop` is called, nodes take no new rows and send no new requests (those in flight still finish), and
    engine start-ups are cancelled.
    `in_flight` counts the requests in flight now; `dropped` is how many there were when the stop turned immediate
    (None while it is graceful)."""

    def __init__(self, in_flight: Callable[[], int] = lambda: 0) -> None:
        self.stopping: str | None = None
        self.exit_code = 130
        self.in_flight = in_flight
        self.dropped: int | None = None
        self.cancelled_by = ""  # what turned the stop immediate
        self._on_stop: list[Callable[[], None]] = []

    def stop(self, reason: str, exit_code: int) -> None:
        if self.stopping is None:
            self.stopping, self.exit_code = reason, exit_code
            for callback in self._on_stop:
                callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the run stops (at once when it already has)."""
        self._on_stop.append(callback)
        if self.stopping:
            callback()

    def cancel(self, task: asyncio.Task[object], by: str) -> None:
        """Stop at once (`by`: what made it so, as in "dropped by ..."): note the requests in flight that cancelling `task` drops, then cancel it."""
        if self.dropped is None:
            self.dropped, self.cancelled_by = self.in_flight(), by
        task.cancel()

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

    drain: list[asyncio.TimerHandle] = []

    def on_signal(name: str, reason: str, exit_code: int) -> None:
        if control.stopping:
            control.cancel(task, f"a second {name}")
            return
        control.stop(reason, exit_code)
        limit = f"the {DRAIN_SECONDS:.0f}-second limit on finishing them"
        drain.append(loop.call_later(DRAIN_SECONDS, control.cancel, task, limit))

    loop.add_signal_handler(signal.SIGINT, on_signal, "Ctrl-C", "Interrupted (Ctrl-C)", 130)
    loop.add_signal_handler(signal.SIGTERM, on_signal, "SIGTERM", "Stopped by SIGTERM", 143)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
        for handle in drain:
            handle.cancel()


def with_resume_hint(error: RunInterrupted, control: StopSignal, output_dir: Path) -> RunInterrupted:
    """`error` with what became of the requests in flight (finished, or dropped by an immediate stop), what was kept
    and how to resume."""
    message = (
        f"{error}: {_in_flight_fate(control)}, engines stopped, and every finished row is saved in {output_dir}. "
        "Run the same command again (same chain, inputs and output directory) to resume."
    )
    return RunInterrupted(message, error.exit_code)


def _in_flight_fate(control: StopSignal) -> str:
    """What the stop did with the requests in flight: finished them, or dropped them (saying how many and why)."""
    if control.dropped is None:
        return "requests in flight were finished"
    count = f"{control.dropped} request{'' if control.dropped == 1 else 's'} in flight"
    return f"{count} dropped by {control.cancelled_by} (their rows are not decided: the next run asks them again)"


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
