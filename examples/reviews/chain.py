"""Product reviews: classify sentiment, keep the clear ones, translate in parallel, summarise.

Two LLM steps, an apply, and a parallel pair of joined branches. The engine `llm` runs on the
offline `fake` backend; `--engines engines-openai.yaml` (or -vllm, -ollama) swaps it for a real one.
"""

from typing import Literal

from pydantic import BaseModel, Field

from chainette import Branch, Chain, SamplingParams, Step, apply, register_engine


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


register_engine("llm", backend="fake", model="fake-model")

sentiment = Step(
    id="sentiment",
    input_model=Review,
    output_model=Sentiment,
    engine_name="llm",
    sampling=SamplingParams(temperature=0.0),
    system_prompt="You label the sentiment of product reviews.",
    user_prompt="Review: {{text}}",
)


def confident(item: Sentiment) -> Sentiment | list[Sentiment]:
    """Keep rows the classifier is reasonably sure about; an empty list filters the row out."""
    return item if item.confidence >= 0.1 else []


def translate(language: str) -> Branch:
    step = Step(
        id=f"to_{language}",
        output_model=Translation,
        engine_name="llm",
        user_prompt=f"Translate this review into {language}: {{{{chain_input.text}}}}",
    )
    return Branch(name=language, steps=[step]).join(language)


summary = Step(
    id="summary",
    output_model=Summary,
    engine_name="llm",
    user_prompt=(
        "Sentiment: {{sentiment.sentiment}}.\n"
        "Review: {{chain_input.text}}\nIn French: {{fr.translation}}\nIn German: {{de.translation}}\n"
        "Write a one-line headline and up to three keywords."
    ),
)

chain = Chain(name="reviews", steps=[sentiment, apply(confident), [translate("fr"), translate("de")], summary])
