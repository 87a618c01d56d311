"""The vllm plugin module: discovery, options model, endpoint resolution and sampling translation."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from chainette import SamplingParams, register_engine
from chainette.errors import ConfigError
from chainette.plugins import get_plugins
from chainette.sampling import UnsupportedSamplingWarning
import chainette_vllm
from chainette_vllm import DEFAULT_ENDPOINT, VllmOptions


def translate(config, sampling):
    return get_plugins().call("vllm", "translate_sampling", config=config, sampling=sampling)


def test_entry_point_registers_backend_with_alias():
    plugins = get_plugins()
    assert plugins.resolve("vllm_api") == "vllm"
    info = plugins.found["vllm"]
    assert info.error is None
    assert info.distribution == "chainette-vllm"
    assert info.aliases == ["vllm_api"]
    assert {"engine_options", "ensure_running", "make_client", "translate_sampling"} <= set(info.hooks)
    assert "vllm" in [listed.name for listed in plugins.all() if listed.error is None]


def test_loading_the_plugin_imports_no_http_library():
    code = "import sys, chainette_vllm; bad = [m for m in ('httpx2', 'httpx', 'openai', 'vllm') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_options_defaults():
    config = register_engine("v", backend="vllm_api", model="m")
    assert config.backend == "vllm"
    assert isinstance(config.options, VllmOptions)
    assert config.options.max_concurrency == 256
    assert config.options.chat_template_kwargs is None
    assert config.options.include_reasoning is None
    assert config.options.timeout == 120.0


def test_options_are_set_and_validated():
    config = register_engine(
        "v", backend="vllm", model="m", chat_template_kwargs={"enable_thinking": False}, include_reasoning=True, max_concurrency=8
    )
    assert config.options.chat_template_kwargs == {"enable_thinking": False}
    assert config.options.include_reasoning is True
    assert config.options.max_concurrency == 8
    with pytest.raises(ConfigError, match="max_concurrency"):
        register_engine("v", backend="vllm", model="m", max_concurrency=0)


def test_option_typo_is_rejected_with_valid_options_listed():
    with pytest.raises(ConfigError) as info:
        register_engine("v", backend="vllm", model="m", chat_template_kwarg={"enable_thinking": False})
    message = str(info.value)
    assert "Did you mean 'chat_template_kwargs'?" in message
    assert "Valid options: chat_template_kwargs, include_reasoning, max_concurrency, max_retries, timeout." in message


def test_ensure_running_returns_endpoint_or_default():
    assert chainette_vllm.ensure_running(register_engine("a", backend="vllm", model="m")) == DEFAULT_ENDPOINT
    configured = register_engine("b", backend="vllm", model="m", endpoint="http://gpu-box:9000/v1")
    assert get_plugins().call("vllm", "ensure_running", config=configured, run_dir=None) == "http://gpu-box:9000/v1"


def test_every_sampling_field_maps_to_the_same_top_level_name_without_warning():
    config = register_engine("v", backend="vllm", model="m")
    sampling = SamplingParams(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        max_tokens=64,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.3,
        repetition_penalty=1.1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wire = translate(config, sampling)
    assert not [w for w in caught if issubclass(w.category, UnsupportedSamplingWarning)]
    assert wire == sampling.model_dump(exclude={"extra"})


def test_unset_fields_are_not_sent_and_extra_is_merged_last():
    config = register_engine("v", backend="vllm", model="m")
    wire = translate(config, SamplingParams(temperature=0.5, extra={"temperature": 0.0, "min_tokens": 3, "priority": 1}))
    assert wire == {"temperature": 0.0, "min_tokens": 3, "priority": 1}
    assert translate(config, SamplingParams()) == {}


def test_guided_fields_in_extra_are_refused():
    config = register_engine("v", backend="vllm", model="m")
    with pytest.raises(ConfigError, match="guided_json, guided_regex"):
        translate(config, SamplingParams(extra={"guided_regex": "a+", "guided_json": {}, "top_k": 5}))
