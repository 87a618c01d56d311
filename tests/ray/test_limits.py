"""Cluster-wide limits, first version: each block's engine gets its share of the engine's limits, and no more blocks
run at once than the smallest limit can give a share of 1 to."""

from __future__ import annotations

from chainette import register_engine
from chainette_ray.limits import most_blocks, shared


def test_each_block_gets_its_share_of_every_limit():
    config = register_engine("llm", backend="fake", model="m", max_concurrency=16, requests_per_minute=600, tokens_per_minute=10_001)
    share = shared({"llm": config}, 4)["llm"].options
    assert (share.max_concurrency, share.requests_per_minute, share.tokens_per_minute) == (4, 150, 2500)
    assert config.options.max_concurrency == 16, "the driver's engine is left as it was"


def test_no_more_blocks_at_once_than_the_smallest_limit_allows():
    loose = register_engine("loose", backend="fake", model="m", max_concurrency=64)
    tight = register_engine("tight", backend="fake", model="m", max_concurrency=8, requests_per_minute=3)
    assert most_blocks({"loose": loose}, 10) == 10
    assert most_blocks({"loose": loose, "tight": tight}, 10) == 3
    assert shared({"tight": tight}, 3)["tight"].options.max_concurrency == 2
