"""The models and the apply function that chain.yaml refers to as `models:Name`."""

from typing import Literal

from pydantic import BaseModel, Field


class Review(BaseModel):
    text: str


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    confidence: float = Field(ge=0, le=1)


class Translation(BaseModel):
    translation: str


class Summary(BaseModel):
    headline: str
    keywords: list[str]


def confident(item: Sentiment) -> Sentiment | list[Sentiment]:
    """Keep rows the classifier is reasonably sure about; an empty list filters the row out."""
    return item if item.confidence >= 0.1 else []
