"""The openai backend as a plugin: options, sampling translation, the key check, and a light import."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
import warnings

import pytest

from chainette import register_engine
from chainette.errors import ConfigError, EngineError
from chainette.plugins import get_plugins
from chainette.pricing import Price
from chainette.sampling import SamplingParams, UnsupportedSamplingWarning
from chainette_openai import OpenAIOptions


def test_options_defaults():
    config = register_engine("gpt", backend="openai", model="gpt-test")
    assert isinstance(config.options, OpenAIOptions)
    assert config.options.max_concurrency == 32
    assert config.options.organization is None
    assert config.options.project is None
    assert config.options.timeout == 120.0


def test_options_accept_organization_and_project():
    config = register_engine("gpt", backend="openai", model="gpt-test", organization="org-1", project="proj-1", max_concurrency=8)
    assert (config.options.organization, config.options.project, config.options.max_concurrency) == ("org-1", "proj-1", 8)


def test_option_typo_is_rejected_with_the_valid_options():
    with pytest.raises(ConfigError) as info:
        register_engine("gpt", backend="openai", model="gpt-test", organisation="org-1")
    message = str(info.value)
    assert "has no option 'organisation'" in message
    assert "Did you mean 'organization'?" in message
    from chainette_openai import OpenAIOptions

    assert f"Valid options: {', '.join(sorted(OpenAIOptions.model_fields))}." in message


def _translate(engine: str, sampling: SamplingParams, **options: Any) -> dict:
    config = register_engine(engine, backend="openai", model="gpt-test", **options)
    return get_plugins().call("openai", "translate_sampling", config=config, sampling=sampling)


def test_sampling_fields_are_renamed_for_the_responses_api():
    """The Responses API (the default on the OpenAI API) takes temperature, top_p and max_output_tokens; the fields
    it has no place for warn once and are not sent."""
    sampling = SamplingParams(temperature=0, top_p=0.9, max_tokens=64, stop=["END"], seed=7)
    with pytest.warns(UnsupportedSamplingWarning) as record:
        wire = _translate("sampling-responses", sampling)
    assert wire == {"temperature": 0, "top_p": 0.9, "max_output_tokens": 64}
    assert sorted(field for field in ("stop", "seed") for w in record if f"'{field}'" in str(w.message)) == ["seed", "stop"]


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({"api": "chat"}, "max_completion_tokens"),
        ({"endpoint": "http://127.0.0.1:9/v1"}, "max_tokens"),
        ({"endpoint": "http://127.0.0.1:9/v1", "profile": "vllm"}, "max_completion_tokens"),
        ({"endpoint": "http://127.0.0.1:9/v1", "profile": "vllm", "token_limit": "max_tokens"}, "max_tokens"),
        ({"api": "chat", "token_limit": "max_tokens"}, "max_tokens"),
    ],
)
def test_chat_sampling_fields_and_the_token_limit_of_the_profile(options, limit):
    sampling = SamplingParams(temperature=0, top_p=0.9, max_tokens=64, stop=["END"], seed=7, presence_penalty=0.5, frequency_penalty=-0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wire = _translate(f"sampling-chat-{len(str(options))}", sampling, **options)
    assert wire == {
        "temperature": 0,
        "top_p": 0.9,
        limit: 64,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }


def test_extra_passes_through_and_overrides():
    wire = _translate("sampling-extra", SamplingParams(temperature=0.2, extra={"temperature": 1.0, "reasoning_effort": "low", "top_k": 3}))
    assert wire == {"temperature": 1.0, "reasoning_effort": "low", "top_k": 3}


def test_unsupported_fields_warn_once_per_engine_and_are_not_sent():
    sampling = SamplingParams(temperature=0.1, top_k=5, min_p=0.1, repetition_penalty=1.1)
    with pytest.warns(UnsupportedSamplingWarning) as record:
        wire = _translate("sampling-warned", sampling)
    assert wire == {"temperature": 0.1}
    named = sorted(field for field in ("top_k", "min_p", "repetition_penalty") for w in record if f"'{field}'" in str(w.message))
    assert named == ["min_p", "repetition_penalty", "top_k"]
    assert all("sampling-warned" in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _translate("sampling-warned", sampling) == {"temperature": 0.1}


def test_missing_key_without_endpoint_fails_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = register_engine("nokey", backend="openai", model="gpt-test")
    with pytest.raises(EngineError) as info:
        get_plugins().call("openai", "make_client", config=config)
    message = str(info.value)
    assert info.value.kind == "authentication"
    assert "nokey" in message
    assert "api_key=" in message and "api_key_env" in message and "OPENAI_API_KEY" in message


def test_missing_key_names_the_configured_variable(monkeypatch):
    monkeypatch.delenv("MY_OPENAI_KEY", raising=False)
    config = register_engine("nokey", backend="openai", model="gpt-test", api_key_env="MY_OPENAI_KEY")
    with pytest.raises(ConfigError, match="Engine 'nokey': api_key_env names the environment variable MY_OPENAI_KEY, which is not set"):
        get_plugins().call("openai", "make_client", config=config)


def test_missing_default_key_without_endpoint_names_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = register_engine("nokey", backend="openai", model="gpt-test")
    with pytest.raises(EngineError, match="the environment variable OPENAI_API_KEY is not set"):
        get_plugins().call("openai", "make_client", config=config)


async def test_key_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    client = get_plugins().call("openai", "make_client", config=register_engine("envkey", backend="openai", model="gpt-test"))
    assert client._client.api_key == "sk-from-env"
    await client.aclose()


async def test_endpoint_without_key_uses_a_placeholder(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = register_engine("local", backend="openai", model="m", endpoint="http://127.0.0.1:9/v1")
    client = get_plugins().call("openai", "make_client", config=config)
    assert client._client.api_key == "not-needed"
    assert str(client._client.base_url).startswith("http://127.0.0.1:9/v1")
    assert client._client.max_retries == 0
    await client.aclose()


def test_loading_the_plugin_imports_no_http_library():
    code = "import sys, chainette_openai; print([m for m in ('openai', 'httpx2', 'httpx', 'aiohttp') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_known_models_have_a_price_and_engine_options_override_it():
    from chainette.engines import engine_price

    assert engine_price(register_engine("a", backend="openai", model="gpt-4o-mini")) == Price(0.15, 0.60, cache_read=0.075)
    assert engine_price(register_engine("b", backend="openai", model="gpt-4o-2024-08-06")) == Price(2.50, 10.00, cache_read=1.25)
    assert engine_price(register_engine("c", backend="openai", model="my-finetune")) is None
    assert engine_price(register_engine("d", backend="openai", model="gpt-4o", endpoint="http://127.0.0.1:1/v1")) is None
    given = register_engine("e", backend="openai", model="gpt-4o", price_per_million_input=1, price_per_million_output=2)
    assert engine_price(given) == Price(1, 2)
    cheaper_reads = register_engine("f", backend="openai", model="gpt-4o", price_per_million_cache_read=0.5)
    assert engine_price(cheaper_reads) == Price(2.50, 10.00, cache_read=0.5), "a cache price alone overrides the table's"
