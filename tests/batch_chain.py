"""What the batch tests of every backend share: the rows, the answer model, a stand-in answer that echoes each row's
text as its label (so that alignment can be checked), the two-step chain on engine `llm`, and retries without waiting."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel
import pytest

from chainette import Chain, Step
import chainette.policy


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def echo(body: dict) -> str:
    """The label a stand-in server answers: the text between << and >> in the request's user message."""
    user = next(message["content"] for message in body["messages"] if message["role"] == "user")
    return json.dumps({"label": re.search(r"<<(.*?)>>", user).group(1)})


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    """Retries without waiting."""
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.001)


def chain(*, two: bool = True) -> Chain:
    """A label step on engine `llm`, and (`two`) a second one asking again for the first one's label."""
    first = Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")
    second = Step(id="again", output_model=Label, engine_name="llm", user_prompt="again <<{{label.label}}>>")
    return Chain(name="batched", steps=[first, second] if two else [first])


def rows(n: int) -> list[dict]:
    return [{"text": f"row{i}"} for i in range(n)]


def labels(result, step: str = "again") -> dict[str, str]:
    """The label of each row the step answered, by row id."""
    return {record["row_id"]: record["label"] for record in result.records(step)}
