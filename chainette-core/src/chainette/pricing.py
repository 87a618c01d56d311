"""Prices and costs. The rule: a token is priced by its kind. Input read from the provider's prompt cache and input
written to it are counted apart from the rest of the input (which `input_tokens` counts alone), each at its own price,
the input price where the provider has none for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

BATCH_DISCOUNT = 0.5
"""What a provider's batch API charges of its usual price (OpenAI, Anthropic and Gemini alike)."""


class Tokens(Protocol):
    """Token counts of the four kinds (a request's `Usage`, a node's spending)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens: uncached input, output, input read from the prompt cache and input written to it
    (None: at the input price)."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def scaled(self, factor: float) -> Price:
        """This price times `factor` (a batch discount), every kind alike."""
        return Price(
            self.input * factor,
            self.output * factor,
            None if self.cache_read is None else self.cache_read * factor,
            None if self.cache_write is None else self.cache_write * factor,
        )


def as_price(value: Price | tuple[float, float] | None) -> Price | None:
    """A `model_price` hook's answer as a Price (a plugin may still answer a pair: input and output)."""
    if value is None or isinstance(value, Price):
        return value
    return Price(float(value[0]), float(value[1]))


def cost(price: Price | None, tokens: Tokens) -> float | None:
    """USD for `tokens` at `price`, rounded to a millionth; None when the price is unknown."""
    if price is None:
        return None
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    total = tokens.input_tokens * price.input + tokens.output_tokens * price.output
    total += tokens.cache_read_tokens * read + tokens.cache_write_tokens * write
    return round(total / 1_000_000, 6)
