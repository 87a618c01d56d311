"""Prices by token kind: input read from and written to the prompt cache are counted apart and priced at their own
price (the input price where none is given), through a run's figures, its budget and the response cache."""

from __future__ import annotations

import pytest
from rich.console import Console

from chainette import Chain, register_engine
from chainette.client import Answer, Usage
from chainette.pricing import Price, as_price, cost
from chainette.ui.summary import summary

from .test_run import label_step, rows


def test_each_kind_is_priced_at_its_own_price():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=2_000_000, cache_write_tokens=4_000_000)
    assert cost(Price(3.0, 15.0, cache_read=0.3, cache_write=3.75), usage) == pytest.approx(3.0 + 15.0 + 0.6 + 15.0)
    assert cost(Price(3.0, 15.0), usage) == pytest.approx(3.0 + 15.0 + 6.0 + 12.0), "without cache prices, the input price"
    assert cost(None, usage) is None


def test_a_plugins_pair_is_a_price_and_a_batch_discount_scales_every_kind():
    assert as_price((1, 2)) == Price(1.0, 2.0)
    assert as_price(None) is None
    assert Price(2.0, 8.0, cache_read=0.5, cache_write=None).scaled(0.5) == Price(1.0, 4.0, cache_read=0.25, cache_write=None)


def test_usage_adds_up_by_kind_and_totals_every_token():
    total = Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40)
    assert total == Usage(11, 22, 33, 44) and total.total == 110


def cached_tokens(text: str) -> Answer:
    return Answer(
        text=f'{{"label": "{text}", "score": 0.5}}',
        usage=Usage(input_tokens=5, output_tokens=2, cache_read_tokens=100, cache_write_tokens=10),
    )


def test_a_run_counts_cached_tokens_apart_and_prices_them(scripted, tmp_path):
    scripted(lambda request, attempt: cached_tokens("x"))
    register_engine(
        "s",
        backend="scripted",
        model="m",
        price_per_million_input=2.0,
        price_per_million_output=10.0,
        price_per_million_cache_read=0.2,
        price_per_million_cache_write=2.5,
    )
    result = Chain(name="c", steps=[label_step()]).run(rows(4), output_dir=tmp_path / "o")
    step = result.stats["steps"]["label"]
    assert (step["input_tokens"], step["output_tokens"], step["cache_read_tokens"], step["cache_write_tokens"]) == (20, 8, 400, 40)
    assert step["cost_usd"] == pytest.approx((20 * 2.0 + 8 * 10.0 + 400 * 0.2 + 40 * 2.5) / 1_000_000)
    console = Console(width=200, record=True, color_system=None)
    console.print(summary(result.stats, str(tmp_path / "o")))
    assert "20/8 +400 cached +40 to cache" in console.export_text()


def test_answers_from_the_response_cache_keep_their_cached_tokens_as_saved(scripted, tmp_path):
    scripted(lambda request, attempt: cached_tokens("x"))
    register_engine(
        "s", backend="scripted", model="m", price_per_million_input=2.0, price_per_million_output=10.0, price_per_million_cache_read=0.2
    )
    chain = Chain(name="c", steps=[label_step()])
    chain.run(rows(3), output_dir=tmp_path / "first")
    again = chain.run(rows(3), output_dir=tmp_path / "second").stats["steps"]["label"]
    assert again["cached"] == 3 and again["cache_read_tokens"] == 0
    assert (again["saved_input_tokens"], again["saved_cache_read_tokens"], again["saved_cache_write_tokens"]) == (15, 300, 30)
    assert again["saved_usd"] == pytest.approx((15 * 2.0 + 6 * 10.0 + 300 * 0.2 + 30 * 2.0) / 1_000_000)
