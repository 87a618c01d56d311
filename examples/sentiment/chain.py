"""Sentiment of product reviews: one step, on the offline fake backend unless --engines says otherwise."""

from typing import Literal

from pydantic import BaseModel, Field

from chainette import Chain, SamplingParams, Step, register_engine


class Review(BaseModel):
    text: str


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    confidence: float = Field(ge=0, le=1)


register_engine("llm", backend="fake", model="fake-model")

chain = Chain(
    name="sentiment",
    steps=[
        Step(
            id="sentiment",
            input_model=Review,
            output_model=Sentiment,
            engine_name="llm",
            sampling=SamplingParams(temperature=0.0),
            system_prompt="You label the sentiment of product reviews.",
            user_prompt="Review: {{text}}",
        )
    ],
)
