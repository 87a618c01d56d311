"""A rich Tree of a chain: input model, steps with their engine, parallel branches and joins, and whether each
top-level node streams with the one before or waits for the previous segment (chainette.execution.segments)."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from chainette.chain import Chain
from chainette.engines import registered_engines
from chainette.execution.segments import explain, node_conflicts
from chainette.nodes import Apply, Node, Parallel, Step


def chain_tree(chain: Chain) -> Tree:
    """The tree `chainette inspect` prints; names and models are shown as they are, never read as markup."""
    model = chain.input_model.__name__ if chain.input_model else "any object"
    tree = Tree(Text.assemble((chain.name, "bold"), f"  (input: {model})"))
    _add(tree, chain.nodes, _segment_notes(chain))
    return tree


def _segment_notes(chain: Chain) -> list[Text]:
    """Per top-level node, whether it streams or waits and why; none while an engine is unregistered (inspect then fails)."""
    engines = registered_engines()
    used = chain.engine_users()
    if not used.keys() <= engines.keys():
        return []
    found = node_conflicts(chain.nodes, {name: engines[name] for name in used})
    return [Text(f"  · {phrase}", style="yellow" if conflict else "dim") for conflict, phrase in zip(found, explain(found), strict=True)]


def _add(tree: Tree, nodes: list[Node], notes: list[Text]) -> None:
    """Add `nodes` under `tree`, each label followed by its note (top-level nodes have one)."""
    engines = registered_engines()
    for position, node in enumerate(nodes):
        note = notes[position] if notes else ""
        if isinstance(node, Parallel):
            group = tree.add(Text.assemble(("parallel", "magenta"), note))
            for branch in node.branches:
                joined = (" → join as ", (branch.alias, "bold")) if branch.alias else ()
                _add(group.add(Text.assemble("branch ", (branch.name, "bold"), *joined)), branch.steps, [])
        elif isinstance(node, Step):
            engine = engines.get(node.engine_name)
            where = f"{engine.backend}: {engine.model}" if engine else ("not registered", "red")
            out = f" → {node.output_model.__name__}  engine {node.engine_name} ("
            tree.add(Text.assemble("step ", (node.id, "bold"), out, where, ")", note))
        elif isinstance(node, Apply):
            out = node.output_model.__name__ if node.output_model else "same rows"
            tree.add(Text.assemble("apply ", (node.id, "bold"), f" → {out}", note))
