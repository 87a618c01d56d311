"""What a row's context carries from node to node. A row's `ctx` holds the entries later nodes can read: the
chain input and earlier outputs by id, join aliases, `<step>_reasoning`. Each node's output rows keep only its
own entries, its direct input's, and those a later step's prompts name, so a frontier's size per row does not
grow with the number of steps before it. The last top-level node's rows also keep every top-level entry they
receive: the flattened table (chainette.execution.flatten) reads those from the final frontier and gathers
only the others from the frontiers that added them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chainette.nodes import INPUT_ID, Apply, Node, Parallel, Step
from chainette.templates import referenced_names


def kept_entries(nodes: list[Node]) -> dict[int, frozenset[str]]:
    """For every node and parallel group (by `id()`), the context entries its output rows keep."""
    order = list(_in_order(nodes))
    kept: dict[int, frozenset[str]] = {}
    later: set[str] = set()
    for node in reversed(order):
        kept[id(node)] = frozenset(later.union(own_entries(node)))
        if isinstance(node, Step):
            later |= _named(node)
    if nodes:
        last = id(nodes[-1])
        kept[last] = kept[last].union([INPUT_ID], *(own_entries(node) for node in nodes))
    return kept


def carried_to_end(nodes: list[Node], kept: dict[int, frozenset[str]]) -> frozenset[str]:
    """The top-level entries (the input's among them) that the last top-level node's rows carry: those every
    top-level node after the one that added them keeps."""
    carried = frozenset([INPUT_ID])
    for node in nodes:
        carried = carried.union(own_entries(node)) & kept[id(node)]
    return carried


def own_entries(node: Node) -> tuple[str, ...]:
    """The context entries a node adds, in column order: a node's output (and a step's reasoning), or a group's join aliases."""
    if isinstance(node, Parallel):
        return tuple(branch.alias for branch in node.branches if branch.alias)
    return (node.id, f"{node.id}_reasoning") if isinstance(node, Step) else (node.id,)


def keep(ctx: dict[str, Any], kept: frozenset[str], direct: str) -> dict[str, Any]:
    """`ctx` with only the `kept` entries and the `direct` one (`ctx` itself when it holds no other)."""
    if kept.issuperset(ctx):
        return ctx
    return {key: value for key, value in ctx.items() if key in kept or key == direct}


def _in_order(nodes: list[Node]) -> Iterator[Step | Apply | Parallel]:
    """Every node in execution order, a group after its branches' nodes."""
    for node in nodes:
        if isinstance(node, Parallel):
            for branch in node.branches:
                yield from _in_order(branch.steps)
        yield node


def _named(step: Step) -> set[str]:
    """The names a step's prompts read (context entries among them)."""
    sources = [step.user_prompt, step.system_prompt]
    return {name for source in sources if source for name in referenced_names(source, where=f"step '{step.id}'")}
