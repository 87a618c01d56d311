"""The ollama plugin's hooks: options model, server address, sampling translation, plugin loading."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings

import pytest

from chainette import EngineOptions, SamplingParams, register_engine
from chainette.errors import ConfigError
from chainette.plugins import get_plugins
from chainette.sampling import UnsupportedSamplingWarning
import chainette_ollama
from chainette_ollama import OllamaOptions, base_url


def test_defaults():
    options = OllamaOptions()
    assert options.max_concurrency == 4
    assert options.think is None
    assert options.keep_alive is None
    assert options.timeout == 120.0
    assert options.max_retries == EngineOptions().max_retries


def test_registered_engine_uses_the_ollama_options():
    config = register_engine("local", backend="ollama", model="llama3.2", think="low", keep_alive="10m", max_concurrency=2)
    assert isinstance(config.options, OllamaOptions)
    assert (config.options.think, config.options.keep_alive, config.options.max_concurrency) == ("low", "10m", 2)


def test_alias_ollama_api_resolves_to_ollama():
    config = register_engine("local", backend="ollama_api", model="llama3.2", think=True, keep_alive=0)
    assert config.backend == "ollama"
    assert config.options.think is True
    assert config.options.keep_alive == 0


def test_plugin_is_found_through_its_entry_point():
    plugins = get_plugins()
    assert plugins.resolve("ollama_api") == "ollama"
    info = next(i for i in plugins.all() if i.name == "ollama")
    assert info.error is None
    assert info.distribution == "chainette-ollama"
    assert info.aliases == ["ollama_api"]
    assert {"engine_options", "ensure_running", "make_client", "translate_sampling"} <= set(info.hooks)


def test_typo_is_rejected_with_valid_options_listed():
    with pytest.raises(ConfigError) as caught:
        register_engine("local", backend="ollama", model="llama3.2", keepalive="5m")
    message = str(caught.value)
    assert "no option 'keepalive'" in message
    assert "Did you mean 'keep_alive'?" in message
    assert f"Valid options: {', '.join(sorted(chainette_ollama.OllamaOptions.model_fields))}." in message


@pytest.mark.parametrize("value", ["maximum", 3])
def test_bad_think_value_is_rejected(value):
    with pytest.raises(ConfigError, match=r"invalid option for backend 'ollama'.*think"):
        register_engine("local", backend="ollama", model="llama3.2", think=value)


def test_loading_the_plugin_module_imports_no_http_library():
    code = "import sys, chainette_ollama; bad = {'httpx2', 'httpx', 'openai', 'chainette.http'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0:11434", "http://0.0.0.0:11434"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("myhost", "http://myhost:11434"),
        ("myhost:8080", "http://myhost:8080"),
        (":5555", "http://127.0.0.1:5555"),
        ("http://myhost", "http://myhost:80"),
        ("https://myhost", "https://myhost:443"),
        ("https://myhost:8443/ollama/", "https://myhost:8443/ollama"),
        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("  myhost  ", "http://myhost:11434"),
    ],
)
def test_base_url_normalises_ollama_addresses(value, expected):
    assert base_url(value) == expected


def test_base_url_rejects_a_bad_port():
    with pytest.raises(ConfigError, match="OLLAMA_HOST 'myhost:abc' is not a valid Ollama address"):
        base_url("myhost:abc")


def ensure_running(config):
    return get_plugins().call("ollama", "ensure_running", config=config, run_dir=None, cancelled=threading.Event())


def test_ensure_running_defaults_to_localhost(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ensure_running(register_engine("local", backend="ollama", model="m")) == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("env", "expected"),
    [("0.0.0.0:11434", "http://0.0.0.0:11434"), ("gpu-box", "http://gpu-box:11434"), ("https://o.example", "https://o.example:443")],
)
def test_ensure_running_reads_ollama_host(monkeypatch, env, expected):
    monkeypatch.setenv("OLLAMA_HOST", env)
    assert ensure_running(register_engine("local", backend="ollama", model="m")) == expected


def test_endpoint_wins_over_ollama_host(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "elsewhere:1")
    config = register_engine("local", backend="ollama", model="m", endpoint="localhost:7000")
    assert ensure_running(config) == "http://localhost:7000"


def test_bad_endpoint_names_the_engine():
    config = register_engine("local", backend="ollama", model="m", endpoint="host:port")
    with pytest.raises(ConfigError, match="engine 'local' endpoint 'host:port'"):
        ensure_running(config)


def translate(sampling, name="local"):
    config = register_engine(name, backend="ollama", model="m")
    return get_plugins().call("ollama", "translate_sampling", config=config, sampling=sampling)


def test_every_sampling_field_maps_into_options_without_warnings():
    sampling = SamplingParams(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        max_tokens=256,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.3,
        repetition_penalty=1.1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedSamplingWarning)
        wire = translate(sampling)
    assert wire == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "num_predict": 256,
        "stop": ["\n\n"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.3,
        "repeat_penalty": 1.1,
    }


def test_unset_fields_are_not_sent_and_extra_merges_last():
    wire = translate(SamplingParams(temperature=0.5, max_tokens=10, extra={"num_ctx": 8192, "num_predict": 99}))
    assert wire == {"temperature": 0.5, "num_predict": 99, "num_ctx": 8192}


def test_sampling_names_cover_every_sampling_field():
    no_n = {"extra", "n"}  # Ollama has no n: the core sends one request per candidate
    assert set(chainette_ollama.SAMPLING_NAMES) == set(SamplingParams.model_fields) - no_n
