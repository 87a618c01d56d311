"""Runners: what runs a whole chain somewhere other than this process (`chainette run --on TARGET`, `chain.run(on=)`).

A runner comes from a plugin (chainette.hookspecs.make_runner); the core only finds it and hands it the run. It must
write the run directory a local run writes and return the same `RunResult`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chainette.chain import Chain
    from chainette.inputs import Inputs
    from chainette.results import RunResult
    from chainette.run.options import RunOptions


class Runner(Protocol):
    """Runs `chain` over `inputs` with `options` (its `on` names this runner's target) to its end, as `Chain.run` does."""

    def run(self, chain: Chain, inputs: Inputs, options: RunOptions) -> RunResult: ...


def run_on(chain: Chain, inputs: Inputs, options: RunOptions) -> RunResult:
    """Run `chain` with the runner `options.on` names (a ConfigError saying what to install when there is none)."""
    from chainette.plugins import get_plugins

    assert options.on is not None, "a local run goes through chainette.run.session"
    return get_plugins().runner(options.on).run(chain, inputs, options)
