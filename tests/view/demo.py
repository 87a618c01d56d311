"""A real run to view: an apply that drops short reviews, then a step on the OpenAI backend against the loopback
fake server, which sends reasoning text and answers reviews mentioning "refund" with a label the schema refuses
(a validation error with its raw answer). Used by the viewer's tests and by scripts/viewer_screenshots.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from chainette import Chain, Step, apply, register_engine
from chainette.testing import FakeServer

REVIEWS = (
    "The kettle boils fast and looks great on the counter.",
    "Broke after two weeks, I want a refund.",
    "Ok.",
    "Battery lasts all day, the screen is sharp and bright.",
    "Arrived late but the seller was friendly about it.",
    "Terrible smell from the plastic, asked for a refund at once.",
    "Fine.",
    "Best headphones I have owned, the noise cancelling is superb.",
)


class Review(BaseModel):
    text: str


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    confidence: float


def long_enough(review: Review) -> list[Review]:
    """Drop reviews of fewer than three words: they say nothing to label."""
    return [review] if len(review.text.split()) >= 3 else []


def answer(body: dict[str, Any]) -> str:
    """A label from the review's words; "refund" gets one the schema refuses, every time (the repair fails too)."""
    prompt = json.dumps(body["messages"])
    if "refund" in prompt:
        return json.dumps({"sentiment": "furious", "confidence": 0.99})
    label = "negative" if "late" in prompt or "smell" in prompt else "positive"
    return json.dumps({"sentiment": label, "confidence": 0.5 + len(prompt) % 50 / 100})


def make_chain(server: FakeServer) -> Chain:
    register_engine(
        "demo-llm",
        backend="openai",
        model="fake-model",
        endpoint=f"{server.base_url}/v1",
        api_key="sk-demo-viewer",
        price_per_million_input=0.15,
        price_per_million_output=0.6,
    )
    label = Step(
        id="sentiment",
        output_model=Sentiment,
        engine_name="demo-llm",
        system_prompt="You label product reviews.",
        user_prompt="Review: {{text}}\nIs it positive, negative or mixed?",
    )
    return Chain(name="reviews-demo", steps=[apply(long_enough, input_model=Review, output_model=Review), label])


def make_run(out: Path, rows: int = len(REVIEWS), output_format: str = "jsonl") -> Path:
    """Run the demo chain over `rows` reviews (cycling REVIEWS) into `out`; returns `out`."""
    inputs = [{"text": REVIEWS[index % len(REVIEWS)]} for index in range(rows)]
    with FakeServer(respond=answer, reasoning="The review's words decide the label.", api_key="sk-demo-viewer") as server:
        make_chain(server).run(inputs, output_dir=out, progress=False, output_format=output_format)
    return out
