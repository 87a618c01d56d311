"""Sampling translation: a backend's own translate_sampling hook, else the core's default wire names with warnings."""

from __future__ import annotations

import json

import pytest

from chainette import SamplingParams, register_engine
from chainette.engines import get_engine
from chainette.plugins import get_plugins, translate_sampling
from chainette.sampling import UnsupportedSamplingWarning

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
        wire = translate_sampling(get_engine("plain"), ALL_FIELDS)
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
    assert translate_sampling(get_engine("f"), SamplingParams(top_k=5, extra={"x": 1})) == {"top_k": 5, "x": 1}


def test_no_sampling_translates_to_nothing(scripted):
    scripted(lambda request, attempt: "{}")
    register_engine("plain", backend="scripted", model="m")
    assert translate_sampling(get_engine("plain"), None) == {}


DICT_SAMPLING_CHAIN = """from pydantic import BaseModel
from chainette import Chain, Step, register_engine
class Row(BaseModel):
    text: str
register_engine("llm", backend="fake", model="m")
chain = Chain(name="d", steps=[Step(id="s", input_model=Row, output_model=Row, engine_name="llm", user_prompt="{{text}}",
                                    sampling=SAMPLING)])
"""


def test_a_step_takes_sampling_as_a_mapping_and_runs_with_it(tmp_path):
    from .test_cli import chainette

    (tmp_path / "chain.py").write_text(DICT_SAMPLING_CHAIN.replace("SAMPLING", '{"temperature": 0.5, "max_tokens": 9}'))
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    done = chainette("run", "chain.py:chain", "-i", "in.jsonl", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "s" / "000.jsonl").read_text())["row_id"] == "0"


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ('{"temprature": 0.5}', "Step 's': sampling has no field 'temprature'; did you mean temperature? The fields are: temperature,"),
        ('{"max_tokens": 0}', "Step 's': sampling.max_tokens: Input should be greater than or equal to 1."),
        ("0.5", "Step 's': sampling: Input should be a valid dictionary or instance of SamplingParams."),
    ],
)
def test_a_bad_sampling_mapping_is_refused_when_the_step_is_built(tmp_path, sampling, expected):
    from .test_cli import chainette

    (tmp_path / "chain.py").write_text(DICT_SAMPLING_CHAIN.replace("SAMPLING", sampling))
    done = chainette("inspect", "chain.py:chain", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert expected in done.stderr


def test_a_mapping_and_sampling_params_build_the_same_step():
    from chainette import Step

    from .conftest import Label

    given = {"temperature": 0.2, "stop": ["END"], "extra": {"x": 1}}
    as_mapping = Step(id="s", output_model=Label, engine_name="e", user_prompt="x", sampling=given)
    assert as_mapping.sampling == SamplingParams(**given)
