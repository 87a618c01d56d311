"""A rich Tree of a chain: input model, steps with their engine, parallel branches and joins."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from chainette.chain import Chain
from chainette.engines import registered_engines
from chainette.nodes import Apply, Node, Parallel, Step


def chain_tree(chain: Chain) -> Tree:
    """The tree `chainette inspect` prints; names and models are shown as they are, never read as markup."""
    model = chain.input_model.__name__ if chain.input_model else "any object"
    tree = Tree(Text.assemble((chain.name, "bold"), f"  (input: {model})"))
    _add(tree, chain.nodes)
    return tree


def _add(tree: Tree, nodes: list[Node]) -> None:
    engines = registered_engines()
    for node in nodes:
        if isinstance(node, Parallel):
            group = tree.add(Text("parallel", style="magenta"))
            for branch in node.branches:
                joined = (" → join as ", (branch.alias, "bold")) if branch.alias else ()
                _add(group.add(Text.assemble("branch ", (branch.name, "bold"), *joined)), branch.steps)
        elif isinstance(node, Step):
            engine = engines.get(node.engine_name)
            where = f"{engine.backend}: {engine.model}" if engine else ("not registered", "red")
            tree.add(Text.assemble("step ", (node.id, "bold"), f" → {node.output_model.__name__}  engine {node.engine_name} (", where, ")"))
        elif isinstance(node, Apply):
            out = node.output_model.__name__ if node.output_model else "same rows"
            tree.add(Text.assemble("apply ", (node.id, "bold"), f" → {out}"))
