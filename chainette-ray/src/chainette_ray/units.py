"""The units a run commits, in the order it commits them: the input, when the blocks read it (INPUT_UNIT), then each
node (a branch's nodes too) and each parallel group's join, with the unit whose rows it reads. The driver and the workers
plan them alike from the same chain."""

from __future__ import annotations

from dataclasses import dataclass

from chainette.execution.executor import Executor
from chainette.nodes import INPUT_ID, Node, Parallel


@dataclass(frozen=True)
class UnitPlan:
    """A unit's state id (its frontier's name), the unit whose passed-on rows it reads, whether it writes an output
    folder, and whether it is a node (with figures) or a group's join."""

    state_id: str
    upstream: str
    yield_output: bool
    is_node: bool


RAW = ""
"""What the input unit reads: the input's rows as read, before any unit."""
INPUT_UNIT = UnitPlan(INPUT_ID, RAW, yield_output=False, is_node=True)
"""The input as a unit: its rows validated in the blocks, passed on or failed (chainette.execution.ingest)."""


def plan_units(executor: Executor, nodes: list[Node], upstream: str = INPUT_ID) -> list[UnitPlan]:
    """Every unit of `nodes` (reading `upstream`'s rows first) in commit order: a node before the nodes after it, a
    group's branches before its join."""
    units: list[UnitPlan] = []
    for node in nodes:
        if isinstance(node, Parallel):
            for branch in node.branches:
                units += plan_units(executor, branch.steps, upstream)
            state_id = executor._state_id(node)  # the name the core gives the join's frontier
            units.append(UnitPlan(state_id, upstream, False, False))
        else:
            state_id = node.id
            units.append(UnitPlan(state_id, upstream, node.yield_output, True))
        upstream = state_id
    return units
