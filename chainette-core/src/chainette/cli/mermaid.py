"""A Mermaid flowchart of a chain: its input, steps with their engine, applies, parallel branches (as subgraphs) and joins;
an edge into a node that waits for the previous segment (chainette.execution.segments) is dotted and says so."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
import re

from chainette import graph
from chainette.chain import Chain
from chainette.engines import EngineConfig, EngineOptions, registered_engines
from chainette.execution.segments import explain, node_conflicts, node_ids
from chainette.nodes import INPUT_ID, Apply, Node, Parallel, Step

_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "`": "#96;", "\n": " ", "\r": " "}


def chain_mermaid(chain: Chain) -> str:
    """Mermaid `flowchart` source for the chain: one node declaration per node, then one line per edge."""
    model = chain.input_model.__name__ if chain.input_model else "any object"
    lines = ["flowchart TD", f"    %% chain: {_label(chain.name)}", f'    {_id(INPUT_ID)}(["{_label(f"input: {model}")}"])']
    lines.extend(_declare(chain.nodes, registered_engines(), count(), "    "))
    nodes = chain.nodes
    found = node_conflicts(nodes, chain.engines())
    waiting = {index for index, conflict in enumerate(found) if conflict}
    phrases = explain(found)
    lines.extend(f"    %% {' '.join(map(_id, node_ids(nodes[index])))}: {_label(phrases[index])}" for index in sorted(waiting))
    position = {name: index for index, node in enumerate(nodes) for name in node_ids(node)}
    for source, target in graph.describe(nodes, {})["edges"]:
        waits = position[target] in waiting and position.get(source) != position[target]
        lines.append(f"    {_id(source)} {'-. waits .->' if waits else '-->'} {_id(target)}")
    return "\n".join(lines) + "\n"


def _declare(nodes: list[Node], engines: dict[str, EngineConfig[EngineOptions]], groups: Iterator[int], pad: str) -> Iterator[str]:
    for node in nodes:
        if isinstance(node, Parallel):
            for branch in node.branches:
                yield f'{pad}subgraph group_{next(groups)}["{_label(f"branch {branch.name}")}"]'
                yield from _declare(branch.steps, engines, groups, pad + "    ")
                yield f"{pad}end"
                if branch.alias:
                    yield f'{pad}{_id(branch.alias)}{{{{"{_label(f"join as {branch.alias}")}"}}}}'
        elif isinstance(node, Step):
            engine = engines.get(node.engine_name)
            where = f"engine {node.engine_name}" + (f" ({engine.backend}: {engine.model})" if engine else "")
            text = "<br/>".join(_label(part) for part in (f"step {node.id}", f"→ {node.output_model.__name__}", where))
            yield f'{pad}{_id(node.id)}["{text}"]'
        elif isinstance(node, Apply):
            out = node.output_model.__name__ if node.output_model else "same rows"
            text = "<br/>".join(_label(part) for part in (f"apply {node.id}", f"→ {out}"))
            yield f'{pad}{_id(node.id)}[["{text}"]]'


def _id(name: str) -> str:
    """A Mermaid node id: prefixed (so that no id is a keyword such as `end`) and limited to word characters."""
    return "n_" + re.sub(r"\W", "_", name)


def _label(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return "".join(_ESCAPES.get(char, char) for char in text)
