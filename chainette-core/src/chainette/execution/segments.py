"""Placeholder: every top-level node in one segment (replaced by the segment plan)."""

from __future__ import annotations

from collections.abc import Mapping

from chainette.engines import EngineConfig, EngineOptions


def plan_segments(
    plan: list[set[str]], configs: Mapping[str, EngineConfig[EngineOptions]], keys: Mapping[str, str], devices: Mapping[str, frozenset[str]]
) -> list[list[int]]:
    return [list(range(len(plan)))] if plan else []
