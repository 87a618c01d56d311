"""What the batch tests of every backend share: the rows, the answer model, a stand-in answer that echoes each row's
text as its label (so that alignment can be checked), and retries without waiting."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel
import pytest

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
