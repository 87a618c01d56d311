"""Plugin loading: default plugins, entry points one by one, broken and duplicate plugins, the env filter."""

from __future__ import annotations

import threading

import pytest

from chainette import ConfigError, register_engine
from chainette.plugins import get_plugins

WORKING = """
from chainette import hookimpl

@hookimpl
def make_client(config):
    raise NotImplementedError
"""
ALIASED = """
@hookimpl
def backend_aliases():
    return ["good_old_name"]
"""


def test_fake_backend_is_built_in():
    info = {i.name: i for i in get_plugins().all()}["fake"]
    assert info.distribution == "chainette-core"
    assert info.error is None
    assert "make_client" in info.hooks


def test_broken_plugin_is_recorded_and_others_keep_working(install_plugin):
    install_plugin("chainette-broken", "broken", "broken_backend", "raise RuntimeError('boom at import')")
    install_plugin("chainette-good", "good", "good_backend", WORKING)
    found = {i.name: i for i in get_plugins().all()}
    assert "boom at import" in found["broken"].status
    assert found["good"].error is None
    assert found["good"].version == "1.0"
    register_engine("e", backend="good", model="m")
    with pytest.raises(ConfigError, match="failed to load: import failed: RuntimeError: boom at import"):
        register_engine("b", backend="broken", model="m")


def test_duplicate_backend_name_is_reported(install_plugin):
    install_plugin("chainette-one", "twin", "twin_one", WORKING)
    install_plugin("chainette-two", "twin", "twin_two", WORKING)
    infos = [i for i in get_plugins().all() if i.name == "twin"]
    assert len(infos) == 2
    assert sum(i.error is None for i in infos) == 1
    assert any("duplicate backend name" in (i.error or "") for i in infos)


def test_unknown_hook_name_marks_plugin_broken(install_plugin):
    install_plugin("chainette-typo", "typo", "typo_backend", WORKING + "\n@hookimpl\ndef make_clent(config):\n    pass\n")
    assert "unknown hook(s) make_clent" in {i.name: i for i in get_plugins().all()}["typo"].status


def test_load_plugins_env_restricts_entry_points(install_plugin, monkeypatch):
    install_plugin("chainette-good", "good", "good_backend", WORKING)
    install_plugin("chainette-other", "other", "other_backend", WORKING)
    monkeypatch.setenv("CHAINETTE_LOAD_PLUGINS", "chainette-good")
    names = {i.name for i in get_plugins().all()}
    assert "good" in names and "other" not in names and "fake" in names


def test_empty_load_plugins_env_loads_no_entry_points(install_plugin, monkeypatch):
    install_plugin("chainette-good", "good", "good_backend", WORKING)
    monkeypatch.setenv("CHAINETTE_LOAD_PLUGINS", "")
    assert {i.name for i in get_plugins().all()} == {"fake"}


def test_unknown_backend_lists_installed_and_pip_line(monkeypatch):
    monkeypatch.setenv("CHAINETTE_LOAD_PLUGINS", "")
    with pytest.raises(ConfigError) as excinfo:
        register_engine("e", backend="ollama", model="llama3")
    message = str(excinfo.value)
    assert "Unknown backend 'ollama'" in message
    assert "Installed backends: fake" in message
    assert "pip install chainette-ollama" in message


def test_a_backend_declares_its_own_aliases(install_plugin):
    install_plugin("chainette-aliased", "aliased", "aliased_backend", WORKING + ALIASED)
    assert get_plugins().resolve("good_old_name") == "aliased"
    assert next(i for i in get_plugins().all() if i.name == "aliased").aliases == ["good_old_name"]


def test_hooks_reach_only_their_own_backend(scripted):
    backend = scripted(lambda request, attempt: "{}")
    register_engine("s", backend="scripted", model="m")
    register_engine("f", backend="fake", model="m")
    plugins = get_plugins()
    from chainette.engines import get_engine

    plugins.call("fake", "ensure_running", config=get_engine("f"), run_dir=None, cancelled=threading.Event())
    assert backend.events == []
    plugins.call("scripted", "ensure_running", config=get_engine("s"), run_dir=None, cancelled=threading.Event())
    assert backend.events == ["start s"]
