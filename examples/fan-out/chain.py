"""Filter and fan out with apply: split articles into sentences, drop the short ones, label each sentence."""

import re
from typing import Literal

from pydantic import BaseModel

from chainette import Chain, Step, apply, register_engine


class Article(BaseModel):
    title: str
    text: str


class Sentence(BaseModel):
    title: str
    sentence: str


class Claim(BaseModel):
    kind: Literal["fact", "opinion", "other"]
    needs_source: bool


def sentences(article: Article) -> list[Sentence]:
    """One row per sentence of at least five words: several rows fan out, none filters the article out."""
    parts = re.split(r"(?<=[.!?])\s+", article.text.strip())
    return [Sentence(title=article.title, sentence=part) for part in parts if len(part.split()) >= 5]


register_engine("llm", backend="fake", model="fake-model")

label = Step(
    id="claim",
    output_model=Claim,
    engine_name="llm",
    system_prompt="You classify sentences from news articles.",
    user_prompt="Article: {{title}}\nSentence: {{sentence}}\nIs it a fact, an opinion, or other? Does it need a source?",
)

chain = Chain(name="fan-out", steps=[apply(sentences, input_model=Article, output_model=Sentence), label])
