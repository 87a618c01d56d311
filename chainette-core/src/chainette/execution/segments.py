"""Which top-level nodes of a run work at the same time: the run cut into segments, each waiting for the one before.

Rows stream between the nodes of one segment. A node starts a new segment when one of its lazy engines must start a
server on devices (GPUs) that a lazy engine on another server of the current segment holds: such servers run one at a
time, as before streaming. Persistent engines (`lazy=False`) and engines that take no device (endpoints, APIs) never
wait. The planning is pure (`plan_segments`, `conflicts`, `explain`); `server_keys` and `claimed_devices` ask the
backends for the keys and devices it takes, and `node_conflicts` plans a chain's nodes with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chainette import graph
from chainette.engines import EngineConfig, EngineOptions
from chainette.nodes import Node
from chainette.plugins import get_plugins

EVERY = "*"  # the index of a device claim that takes every device of its kind: `cuda:*`


@dataclass(frozen=True)
class Conflict:
    """Why a node waits: its lazy `engine` needs `devices` that `holder`, a lazy engine on another server, holds."""

    engine: str
    devices: frozenset[str]
    holder: str

    def __str__(self) -> str:
        shown = ", ".join(sorted(self.devices, key=lambda device: (len(device), device)))
        return f"engine '{self.engine}' ({shown}) shares GPUs with engine '{self.holder}'"


def server_keys(configs: Mapping[str, EngineConfig[EngineOptions]]) -> dict[str, str]:
    """Each engine's server key: its backend's `server_key`, else (and for an engine answering in batch jobs, which
    starts no shared server) `engine:NAME`, a server of its own. Engines with equal keys share one server."""
    plugins = get_plugins()
    return {
        name: (None if config.options.batch else plugins.hooks(config.backend).server_key(config)) or f"engine:{name}"
        for name, config in configs.items()
    }


def claimed_devices(configs: Mapping[str, EngineConfig[EngineOptions]]) -> dict[str, frozenset[str]]:
    """Each engine's devices, from its backend's `server_devices` hook (empty: it takes none another could want)."""
    plugins = get_plugins()
    return {name: frozenset(plugins.hooks(config.backend).server_devices(config) or ()) for name, config in configs.items()}


def overlap(first: frozenset[str], second: frozenset[str]) -> bool:
    """Whether two device claims share a device; `KIND:*` shares every device of its kind (`cuda:*` and `cuda:1`)."""
    return any(_same_device(a, b) for a in first for b in second)


def _same_device(first: str, second: str) -> bool:
    kind, _, index = first.partition(":")
    other_kind, _, other_index = second.partition(":")
    return first == second or (kind == other_kind and EVERY in (index, other_index))


def conflicts(
    plan: Sequence[set[str]],
    configs: Mapping[str, EngineConfig[EngineOptions]],
    keys: Mapping[str, str],
    devices: Mapping[str, frozenset[str]],
) -> list[Conflict | None]:
    """Per top-level position, the conflict that makes it wait for the previous segment (None: it streams on).

    `plan[p]` names the engines position p uses, `keys` their server keys, `devices` their device claims.
    """
    found: list[Conflict | None] = []
    held: list[str] = []  # the lazy engines with devices that nodes of the current segment use
    for engines in plan:
        claims = sorted(name for name in engines if configs[name].lazy and devices[name])
        conflict = next(
            (
                Conflict(name, devices[name], holder)
                for name in claims
                for holder in held
                if keys[holder] != keys[name] and overlap(devices[name], devices[holder])
            ),
            None,
        )
        if conflict is not None:
            held = []
        held.extend(name for name in claims if name not in held)
        found.append(conflict)
    return found


def plan_segments(
    plan: list[set[str]],
    configs: Mapping[str, EngineConfig[EngineOptions]],
    keys: Mapping[str, str],
    devices: Mapping[str, frozenset[str]],
) -> list[list[int]]:
    """The top-level positions cut into consecutive segments: a segment's nodes stream, and it waits for the one before.

    A position starts a new segment when a lazy engine it uses claims devices overlapping those of a lazy engine with
    another server key used in the current segment; positions using no engine join the current segment.
    """
    return segment_positions(conflicts(plan, configs, keys, devices))


def segment_positions(found: Sequence[Conflict | None]) -> list[list[int]]:
    """The positions grouped into segments, given each position's conflict (`conflicts`): one starts at each conflict."""
    segments: list[list[int]] = []
    for position, conflict in enumerate(found):
        if conflict is not None or not segments:
            segments.append([])
        segments[-1].append(position)
    return segments


def explain(found: Sequence[Conflict | None]) -> list[str]:
    """Per top-level position, given its conflict (`conflicts`), a phrase for `chainette inspect`: it starts the run,
    streams with the node before, or waits for the previous segment and why."""
    return [
        "starts the run" if position == 0 else f"waits for the previous segment: {conflict}" if conflict else "streams with the node before"
        for position, conflict in enumerate(found)
    ]


def node_conflicts(nodes: Sequence[Node], configs: Mapping[str, EngineConfig[EngineOptions]]) -> list[Conflict | None]:
    """`conflicts` for a chain's top-level nodes and their engines, with the keys and devices the backends give."""
    plan = [graph.engines_used(node) for node in nodes]
    return conflicts(plan, configs, server_keys(configs), claimed_devices(configs))


def describe_segments(nodes: Sequence[Node], configs: Mapping[str, EngineConfig[EngineOptions]]) -> list[dict[str, Any]]:
    """The segments as plain data (graph.json): the ids of each segment's nodes (joins included), and why it waits
    for the segment before (None for the first)."""
    found = node_conflicts(nodes, configs)
    return [
        {
            "nodes": [name for position in positions for name in node_ids(nodes[position])],
            "waits": None if found[positions[0]] is None else str(found[positions[0]]),
        }
        for positions in segment_positions(found)
    ]


def node_ids(node: Node) -> list[str]:
    """The graph ids a top-level node stands for (its steps, applies and joins), in graph.json's order."""
    return [described["id"] for described in graph.describe([node], {})["nodes"][1:]]
