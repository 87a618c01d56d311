"""The live rich view: the chain as a tree with a bar per node, rows/s, errors, ETA, tokens and cost, and the engine log."""

from __future__ import annotations

from collections.abc import Callable
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from chainette.events import Event
from chainette.ui.state import NodeView, RunState, duration, money


class LiveView:
    """A listener that keeps a rich Live display up to date (in a terminal or a notebook cell)."""

    interval = 0.25

    def __init__(self, console: Console | None = None):
        self.state = RunState()
        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False, get_renderable=self.render)
        self._echo_on: Callable[[], None] = _nothing

    def __call__(self, event: Event) -> None:
        self.state(event)
        if self.state.finished is None and not self.live.is_started:
            if self.console.is_terminal:
                self._echo_on = echo_off()
            self.live.start()
        elif self.state.finished is not None and self.live.is_started:
            self.live.refresh()
            self.live.stop()
            self._echo_on()
            self._echo_on = _nothing

    def render(self) -> Group:
        return render_state(self.state, time.monotonic())


def _nothing() -> None:
    """Nothing to undo."""


def echo_off() -> Callable[[], None]:
    """Stop the terminal echoing keys while the view is drawn (an echoed ^C shifts it, and it redraws its header lower);
    returns the function that restores the terminal. A no-op where stdin is not a terminal, or without termios."""
    try:
        import termios
    except ImportError:
        return _nothing
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):
        return _nothing
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    return lambda: termios.tcsetattr(fd, termios.TCSANOW, saved)


def render_state(state: RunState, now: float) -> Group:
    """The whole view for `state` at time `now` (a pure function, so it can be snapshotted in tests)."""
    table = Table.grid(padding=(0, 1))
    for column in ("node", "bar", "rows", "rate", "errors", "skipped", "eta", "tokens", "cost"):
        table.add_column(column, justify="left" if column in ("node", "bar") else "right", no_wrap=True)
    for node in state.nodes.values():
        table.add_row(*_row(node, now))
    header = Text.assemble(
        ("chainette ", "bold"), (state.chain, "bold cyan"), f" → {state.output_dir}", " (resuming)" if state.resumed else ""
    )
    log = Panel(Text("\n".join(state.log) or "no engine events yet"), title="log", title_align="left", border_style="dim")
    return Group(header, table, log)


def _row(node: NodeView, now: float) -> list[Any]:
    label = Text(node.label, style="yellow" if node.stopped else "green" if node.finished else "bold")
    if node.kind == "parallel":
        return [label, *[""] * 8]
    if node.started is None:
        return [label, Text("waiting", style="dim"), *[""] * 7]
    total = node.total if node.total is not None else node.estimate if node.estimate is not None else max(node.done, 1)
    bar = ProgressBar(total=max(total, 1), completed=min(node.done, max(total, 1)), width=24, finished_style="green")
    stats = node.stats
    rate = node.rate(now)
    tokens = f"{stats.get('input_tokens', 0)}/{stats.get('output_tokens', 0)} tok" if node.kind == "step" else ""
    failed, filtered, cached = stats.get("failed", 0), stats.get("filtered", 0), stats.get("cached", 0)
    return [
        label,
        bar,
        _rows(node),
        f"{rate:,.0f} rows/s" if rate is not None else "",
        Text(f"{failed} errors", style="red" if failed else "dim"),
        _skipped(filtered, cached),
        _status(node, now),
        tokens,
        money(stats.get("cost_usd")) if node.kind == "step" and stats.get("cost_usd") is not None else "",
    ]


def _skipped(filtered: int, cached: int) -> Text:
    """The rows that cost no request: `N cached` (answered from the response cache), `N filtered`."""
    return Text.assemble(
        (f"{cached} cached", "cyan") if cached else "",
        " " if cached and filtered else "",
        (f"{filtered} filtered", "dim") if filtered else "",
    )


def _status(node: NodeView, now: float) -> Text | str:
    if node.stopped:
        return Text("stopped", style="yellow")
    waiting = node.waiting_batches
    if waiting is not None and not node.finished:
        return Text(waiting, style="cyan")
    return "done" if node.finished else f"ETA {duration(node.eta(now))}"


def _rows(node: NodeView) -> str:
    """`done/total` (`done/~estimate`, or `done so far`, while the total is unknown), and what is in flight beside them
    while there is any."""
    if node.total is not None:
        shown = f"{node.done}/{node.total}"
    else:
        shown = f"{node.done} so far" if node.estimate is None else f"{node.done}/~{node.estimate}"
    return f"{shown} (+{node.in_flight_text})" if node.in_flight and not node.finished else shown
