"""The anthropic backend as a plugin: options, sampling translation, the start checks on output models and media,
prices, and a light import."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
import warnings

from pydantic import BaseModel, ConfigDict, Field
import pytest

pytest.importorskip("anthropic")

from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

from chainette import register_engine
from chainette.errors import ConfigError
from chainette.plugins import get_plugins
from chainette.pricing import Price
from chainette.sampling import SamplingParams, UnsupportedSamplingWarning
from chainette_anthropic import AnthropicOptions


def engine(**options: Any):
    return register_engine("claude", backend="anthropic", model=options.pop("model", "claude-haiku-4-5"), **options)


def call(hook: str, config, **kwargs: Any) -> Any:
    return get_plugins().call("anthropic", hook, config=config, **kwargs)


def test_options_defaults():
    options = engine().options
    assert isinstance(options, AnthropicOptions)
    assert (options.max_tokens, options.structured_output, options.prompt_cache, options.thinking_budget) == (
        4096,
        "json_schema",
        True,
        None,
    )


def test_thinking_with_a_forced_tool_is_refused_when_the_engine_is_registered():
    with pytest.raises(ConfigError, match="thinking_budget cannot be combined with structured_output='tool'"):
        engine(thinking_budget=2048, structured_output="tool")


def test_sampling_is_sent_as_the_sdk_types_it_and_the_rest_warns():
    """The SDK's MessageCreateParams has max_tokens and stop_sequences, and no temperature, top_p, top_k or seed."""
    sampling = SamplingParams(
        temperature=0.2, top_p=0.9, top_k=40, max_tokens=64, stop=["END"], seed=7, extra={"metadata": {"user_id": "u"}}
    )
    with pytest.warns(UnsupportedSamplingWarning) as record:
        wire = call("translate_sampling", engine(), sampling=sampling)
    assert wire == {"max_tokens": 64, "stop_sequences": ["END"], "metadata": {"user_id": "u"}}
    assert set(wire) <= MessageCreateParamsNonStreaming.__annotations__.keys()
    warned = {name for name in ("temperature", "top_p", "top_k", "seed") for w in record if f"'{name}'" in str(w.message)}
    assert warned == {"temperature", "top_p", "top_k", "seed"}


@pytest.mark.parametrize(("sampling", "options"), [(SamplingParams(max_tokens=1500), {}), (SamplingParams(), {"max_tokens": 2048})])
def test_thinking_refuses_at_start_a_token_limit_not_above_its_budget(sampling, options):
    limit = sampling.max_tokens or options["max_tokens"]
    with pytest.raises(ConfigError, match=rf"token limit \({limit}\) must be above thinking_budget \(2048\)"):
        call("translate_sampling", engine(thinking_budget=2048, **options), sampling=sampling)


def test_thinking_takes_a_token_limit_above_its_budget():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert call("translate_sampling", engine(thinking_budget=2048), sampling=SamplingParams(max_tokens=8192)) == {"max_tokens": 8192}


class Span(BaseModel):
    start: int = Field(ge=0)
    end: int


class Constrained(BaseModel):
    """Constraints JSON outputs lack go into descriptions; unions and nested models are as the SDK sends them."""

    name: str = Field(min_length=2, pattern="^[a-z]+$")
    score: float = Field(ge=0, le=1)
    value: int | str
    spans: list[Span] = Field(max_length=3)


class WithDict(BaseModel):
    counts: dict[str, int]


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class Tree(BaseModel):
    label: str
    children: list[Tree]


class HoldsTree(BaseModel):
    root: Tree


@pytest.mark.parametrize("model", [Constrained, Span])
def test_models_json_outputs_express_pass_the_start_check(model):
    assert call("check_output_model", engine(), model=model) == []


@pytest.mark.parametrize(
    ("model", "named"),
    [(WithDict, "WithDict.counts"), (Open, "Open"), (Tree, "Tree contains itself"), (HoldsTree, "Tree contains itself")],
)
def test_what_json_outputs_cannot_express_is_refused_at_start_naming_it(model, named):
    with pytest.raises(ConfigError) as info:
        call("check_output_model", engine(), model=model)
    assert named in str(info.value) and "structured_output='tool'" in str(info.value)


@pytest.mark.parametrize("model", [WithDict, Open, Tree])
def test_a_forced_tool_takes_the_schema_as_it_is(model):
    assert call("check_output_model", engine(structured_output="tool"), model=model) == []


def test_audio_is_refused_at_start_images_and_documents_are_taken():
    config = engine()
    call("check_input_media", config, fields={"photo": "image", "paper": "document"})
    with pytest.raises(ConfigError, match="field 'clip' is an audio, which engine 'claude' cannot take"):
        call("check_input_media", config, fields={"photo": "image", "clip": "audio"})


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("claude-sonnet-4-5", Price(3.00, 15.00, cache_read=0.30, cache_write=3.75)),
        ("claude-sonnet-4-5-20250929", Price(3.00, 15.00, cache_read=0.30, cache_write=3.75)),
        ("claude-3-7-sonnet-latest", Price(3.00, 15.00, cache_read=0.30, cache_write=3.75)),
        ("claude-haiku-4-5", Price(1.00, 5.00, cache_read=0.10, cache_write=1.25)),
        ("claude-opus-4-1-20250805", Price(15.00, 75.00, cache_read=1.50, cache_write=18.75)),
        ("claude-opus-5-5-20260922", Price(4.00, 20.00, cache_read=0.20, cache_write=5.00)),  # not Opus 5's price
        ("claude-opus-5", Price(5.00, 25.00, cache_read=0.50, cache_write=6.25)),
        ("claude-fable-5-1", Price(10.00, 50.00, cache_read=0.25, cache_write=12.50)),
        ("claude-unknown-9", None),
    ],
)
def test_prices_come_from_the_table_by_model_family(model, price):
    assert call("model_price", engine(model=model)) == price


def test_batches_halve_every_kind_of_token():
    assert call("model_price", engine(model="claude-haiku-4-5", batch=True)) == Price(0.50, 2.50, cache_read=0.05, cache_write=0.625)


def test_an_endpoint_other_than_anthropic_s_api_has_no_price():
    assert call("model_price", engine(endpoint="https://gateway.example/anthropic")) is None
    assert call("model_price", engine(endpoint="https://api.anthropic.com")) == Price(1.00, 5.00, cache_read=0.10, cache_write=1.25)


def test_importing_the_plugin_module_does_not_import_the_sdk():
    code = "import sys, chainette_anthropic; print('anthropic' in sys.modules, 'httpx2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
