"""Cluster-wide limits, first version: each block's engine gets an equal share of the engine's `max_concurrency`,
`requests_per_minute` and `tokens_per_minute` (at least 1), so that the blocks in flight together stay within them.
The cost: near the end of a run, fewer blocks run and their idle shares are not handed over."""

from __future__ import annotations

from typing import Any

from chainette.engines import EngineConfig, EngineOptions

SHARED = ("max_concurrency", "requests_per_minute", "tokens_per_minute")


def most_blocks(engines: dict[str, EngineConfig[EngineOptions]], wanted: int) -> int:
    """How many blocks may run at once: `wanted`, or fewer where an engine's limit could not give each block a share of 1."""
    bounds: list[int] = [
        value for config in engines.values() for name in SHARED[:2] if (value := getattr(config.options, name)) is not None
    ]
    return max(1, min([wanted, *bounds]))


def shared(engines: dict[str, EngineConfig[EngineOptions]], blocks: int) -> dict[str, EngineConfig[EngineOptions]]:
    """The engines as each of `blocks` blocks running at once uses them: their limits divided among the blocks."""
    return {
        name: config.model_copy(update={"options": config.options.model_copy(update=_shares(config.options, blocks))})
        for name, config in engines.items()
    }


def _shares(options: EngineOptions, blocks: int) -> dict[str, Any]:
    return {name: max(1, value // blocks) for name in SHARED if (value := getattr(options, name)) is not None}
