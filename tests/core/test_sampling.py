"""Sampling translation: a backend's own translate_sampling hook, else the core's default wire names with warnings."""

from __future__ import annotations

import pytest

from chainette import SamplingParams, register_engine
from chainette.engines import get_engine
from chainette.plugins import get_plugins
from chainette.sampling import UnsupportedSamplingWarning, translate

ALL_FIELDS = SamplingParams(
    temperature=0.3,
    top_p=0.9,
    top_k=40,
    min_p=0.05,
    max_tokens=64,
    stop=["END"],
    seed=7,
    presence_penalty=0.1,
    frequency_penalty=0.2,
    repetition_penalty=1.1,
    extra={"custom": "passed-through"},
)


def test_backend_without_hook_gets_default_wire_names_and_warnings(scripted):
    scripted(lambda request, attempt: "{}")
    register_engine("plain", backend="scripted", model="m")
    assert not get_plugins().implements("scripted", "translate_sampling")
    with pytest.warns(UnsupportedSamplingWarning) as caught:
        wire = translate(get_engine("plain"), ALL_FIELDS)
    assert wire == {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "custom": "passed-through",
    }
    messages = [str(w.message) for w in caught if issubclass(w.category, UnsupportedSamplingWarning)]
    assert len(messages) == 3 and all("engine 'plain'" in message for message in messages)
    assert all(any(f"'{name}'" in message for message in messages) for name in ("top_k", "min_p", "repetition_penalty"))


def test_backend_hook_is_used_when_implemented():
    register_engine("f", backend="fake", model="m")
    assert get_plugins().implements("fake", "translate_sampling")
    assert translate(get_engine("f"), SamplingParams(top_k=5, extra={"x": 1})) == {"top_k": 5, "x": 1}


def test_no_sampling_translates_to_nothing(scripted):
    scripted(lambda request, attempt: "{}")
    register_engine("plain", backend="scripted", model="m")
    assert translate(get_engine("plain"), None) == {}
