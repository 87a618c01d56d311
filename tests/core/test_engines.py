"""Engines: option validation by the backend, YAML loading with file:line errors, secrets kept out."""

from __future__ import annotations

import json

import pytest

from chainette import ConfigError, get_engine, load_engines_from_yaml, register_engine


def test_options_are_validated_by_the_backend():
    config = register_engine("e", backend="fake", model="m", latency=0.5, max_concurrency=3)
    assert config.options.latency == 0.5
    assert config.options.max_concurrency == 3
    assert get_engine("e") is config


def test_option_typo_lists_valid_options():
    with pytest.raises(ConfigError) as excinfo:
        register_engine("e", backend="fake", model="m", max_concurency=3)
    message = str(excinfo.value)
    assert "has no option 'max_concurency'" in message
    assert "Did you mean 'max_concurrency'?" in message
    from chainette.backends.fake import FakeOptions

    assert f"Valid options: {', '.join(sorted(FakeOptions.model_fields))}." in message
    assert "latency" in message


def test_option_of_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="latency"):
        register_engine("e", backend="fake", model="m", latency="slow")


def test_unknown_engine_lists_registered_ones():
    register_engine("alpha", backend="fake", model="m")
    with pytest.raises(ConfigError, match=r"No engine named 'beta' .*registered: alpha"):
        get_engine("beta")


def test_api_key_is_never_shown():
    config = register_engine("e", backend="fake", model="m", api_key="sk-PLANTED-123", endpoint="http://user:pw@host:1/v1")
    assert config.resolve_api_key() == "sk-PLANTED-123"
    assert "sk-PLANTED-123" not in repr(config) + str(config)
    public = json.dumps(config.public_dict())
    assert "sk-PLANTED-123" not in public
    assert "pw@" not in public and "host:1" in public


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("MY_KEY", "k1")
    monkeypatch.setenv("DEFAULT_KEY", "k2")
    assert register_engine("a", backend="fake", model="m", api_key_env="MY_KEY").resolve_api_key("DEFAULT_KEY") == "k1"
    assert register_engine("b", backend="fake", model="m").resolve_api_key("DEFAULT_KEY") == "k2"


def test_yaml_engines_are_registered(tmp_path):
    path = tmp_path / "engines.yaml"
    path.write_text(
        "engines:\n  - name: a\n    backend: fake\n    model: m1\n    latency: 0.1\n  - name: b\n    backend: fake\n    model: m2\n"
    )
    configs = load_engines_from_yaml(path)
    assert [c.name for c in configs] == ["a", "b"]
    assert get_engine("a").options.latency == 0.1


def test_yaml_error_names_file_and_line(tmp_path):
    path = tmp_path / "engines.yaml"
    path.write_text(
        "engines:\n  - name: a\n    backend: fake\n    model: m1\n  - name: b\n    backend: fake\n    model: m2\n    latncy: 2\n"
    )
    with pytest.raises(ConfigError, match=r"engines.yaml:5: Engine 'b': backend 'fake' has no option 'latncy'"):
        load_engines_from_yaml(path)


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    path = tmp_path / "engines.yaml"
    path.write_text("engines:\n  - name: [a\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_engines_from_yaml(path)


def test_yaml_without_engines_list(tmp_path):
    path = tmp_path / "engines.yaml"
    path.write_text("models: []\n")
    with pytest.raises(ConfigError, match="top-level 'engines:' list"):
        load_engines_from_yaml(path)


@pytest.mark.parametrize("name", ["org/model", "a\\b", "", "..", "tab\there"])
def test_an_engine_name_that_cannot_be_part_of_a_file_name_is_refused(name):
    with pytest.raises(ConfigError, match=r"Engine name .* cannot be used: engine names become parts of file names"):
        register_engine(name, backend="fake", model="m")


@pytest.mark.parametrize("name", ["llm", "gpt-4o", "llama-3.1-8b", "llm[eu]", "Qwen2.5 7B"])
def test_engine_names_in_use_stay_valid(name):
    assert register_engine(name, backend="fake", model="m").name == name


def test_an_engine_name_with_a_slash_in_yaml_names_its_line(tmp_path):
    path = tmp_path / "engines.yaml"
    path.write_text(
        "engines:\n  - name: llm\n    backend: fake\n    model: m\n  - name: meta-llama/Llama-3\n    backend: fake\n    model: m\n"
    )
    with pytest.raises(ConfigError, match=r"engines.yaml:5: Engine name 'meta-llama/Llama-3' cannot be used"):
        load_engines_from_yaml(path)
