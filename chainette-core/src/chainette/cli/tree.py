"""A rich Tree of a chain: input model, steps with their engine, parallel branches and joins."""

from __future__ import annotations

from rich.tree import Tree

from chainette.chain import Chain
from chainette.engines import registered_engines
from chainette.nodes import Apply, Node, Parallel, Step


def chain_tree(chain: Chain) -> Tree:
    """The tree `chainette inspect` prints."""
    model = chain.input_model.__name__ if chain.input_model else "any object"
    tree = Tree(f"[bold]{chain.name}[/]  (input: {model})")
    _add(tree, chain.nodes)
    return tree


def _add(tree: Tree, nodes: list[Node]) -> None:
    engines = registered_engines()
    for node in nodes:
        if isinstance(node, Parallel):
            group = tree.add("[magenta]parallel[/]")
            for branch in node.branches:
                joined = f" → join as [bold]{branch.alias}[/]" if branch.alias else ""
                _add(group.add(f"branch [bold]{branch.name}[/]{joined}"), branch.steps)
        elif isinstance(node, Step):
            engine = engines.get(node.engine_name)
            where = f"{engine.backend}: {engine.model}" if engine else "[red]not registered[/]"
            tree.add(f"step [bold]{node.id}[/] → {node.output_model.__name__}  engine {node.engine_name} ({where})")
        elif isinstance(node, Apply):
            out = node.output_model.__name__ if node.output_model else "same rows"
            tree.add(f"apply [bold]{node.id}[/] → {out}")
