"""A run's budget (`chainette run --max-cost USD`, `Chain.run(max_cost=...)`): once what this session spent, plus the
estimated cost of its requests in flight, reaches the budget, the run stops as a first Ctrl-C stops it (no new
request; those in flight finish; resumable), and says so with exit status EXIT_BUDGET_REACHED.

A budget is for one session: it counts what this session spends, not what earlier sessions of a resumed run spent,
so the same command run again spends up to its budget more. Answers from the response cache cost nothing. The check
runs each time a request's tokens are counted, before any request waiting for a slot is sent."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chainette.client import Usage
from chainette.engines import EngineConfig, EngineOptions, engine_price
from chainette.errors import ConfigError, RunInterrupted
from chainette.execution.stopping import StopSignal
from chainette.pricing import Price, cost
from chainette.stats import NodeStats, Spent
from chainette.ui.state import money

EXIT_BUDGET_REACHED = 4


def check_priced(steps: Mapping[str, str], engines: Mapping[str, EngineConfig[EngineOptions]]) -> None:
    """Refuse, before any request, a budget over a step (`steps`: its engine's name, by step id) whose engine has no
    known price: its spending could not be counted."""
    for step_id, engine_name in steps.items():
        config = engines[engine_name]
        if engine_price(config) is None:
            raise ConfigError(
                f"Step '{step_id}': engine '{engine_name}' has no known price (backend '{config.backend}', model '{config.model}'), "
                "so a budget (--max-cost) cannot count what it spends. Set the engine's price_per_million_input and "
                "price_per_million_output options (USD per million tokens), or run without --max-cost."
            )


class _Metered(Spent):
    """A step's session spending that calls `counted` each time tokens are added to it."""

    def __init__(self, spent: Spent, counted: Callable[[], None]):
        super().__init__(**vars(spent))
        self._counted = counted

    def add_usage(self, usage: Usage) -> None:
        super().add_usage(usage)
        self._counted()


class Budget:
    """Watches the spending of a session's priced steps (`prices`, by step id, at the prices the run pays: batch prices
    for batch engines) and stops the run through `control` once it reaches `max_cost` USD."""

    def __init__(self, max_cost: float, stats: dict[str, NodeStats], prices: Mapping[str, Price | None], control: StopSignal):
        self.max_cost = max_cost
        self.control = control
        self.reached = False
        self.steps = [(stats[step_id], price) for step_id, price in prices.items() if price is not None]
        for node, _ in self.steps:
            node.session = _Metered(node.session, self.check)

    def spent(self) -> float:
        """USD this session spent so far (requests answered, failed and retried alike)."""
        return sum(cost(price, node.session) or 0.0 for node, price in self.steps)

    def record(self) -> dict[str, float]:
        """What run.json records of the budget: the session's budget and what it spent, in USD."""
        return {"max_cost_usd": self.max_cost, "spent_usd": round(self.spent(), 6)}

    def in_flight(self) -> float:
        """The estimated USD of the requests in flight: each at its step's mean cost per request answered so far (this
        session's, else the earlier sessions'; nothing before any is known)."""
        return sum(node.in_flight * _mean_request_cost(node, price) for node, price in self.steps)

    def check(self) -> None:
        """Stop the run once the spending, requests in flight included, reaches the budget."""
        if self.control.stopping or self.spent() + self.in_flight() < self.max_cost:
            return
        self.reached = True
        self.control.stop(f"Budget reached ({money(self.max_cost)})", EXIT_BUDGET_REACHED)

    def interrupted(self) -> RunInterrupted:
        """What stopped the run, once the requests in flight have finished: the budget, what this session spent, and how to go on."""
        return RunInterrupted(
            f"Budget reached ({money(self.spent())} spent by this session of its {money(self.max_cost)} budget, --max-cost; each "
            f"session has a budget of its own, so running the same command again spends up to {money(self.max_cost)} more)",
            EXIT_BUDGET_REACHED,
        )


def _mean_request_cost(node: NodeStats, price: Price) -> float:
    """A step's mean USD per request answered: this session's when it has any, else the earlier sessions', else 0."""
    for spent, answered in ((node.session, node.session.requests - node.in_flight), (node.earlier, node.earlier.requests)):
        if answered > 0:
            return (cost(price, spent) or 0.0) / answered
    return 0.0
