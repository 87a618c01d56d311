"""Shipping the chain to a cluster whose nodes do not share this machine's files: the modules that define its models
and apply functions (a chain file and its neighbours, not installed packages) travel by value with the chain."""

from __future__ import annotations

from pathlib import Path
import sys
import sysconfig
from types import ModuleType

from ray import cloudpickle

from chainette import graph
from chainette.nodes import Apply, Node


def ship_by_value(nodes: list[Node]) -> list[str]:
    """Have `nodes` pickled with their own modules' code (cloudpickle by value); return the names of those modules."""
    shipped = []
    for module in _own_modules(nodes):
        cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
        shipped.append(module.__name__)
    return sorted(shipped)


def _own_modules(nodes: list[Node]) -> set[ModuleType]:
    """The modules defining the nodes' models and functions that are the user's own code (not installed, not chainette)."""
    found = set()
    for node in graph.iter_nodes(nodes):
        objects = [node.input_model, node.output_model, node.fn if isinstance(node, Apply) else None]
        for obj in objects:
            module = sys.modules.get(getattr(obj, "__module__", "") or "")
            if module is not None and _is_own(module):
                found.add(module)
    return found


def _is_own(module: ModuleType) -> bool:
    """Whether `module` is a source file outside the installed packages and the standard library."""
    top = module.__name__.split(".")[0]
    location = getattr(module, "__file__", None)
    if top == "chainette" or top.startswith("chainette_") or top == "__main__" or location is None:
        return False
    installed = {Path(sysconfig.get_paths()[name]).resolve() for name in ("purelib", "platlib", "stdlib", "platstdlib")}
    return not any(folder in Path(location).resolve().parents for folder in installed)
