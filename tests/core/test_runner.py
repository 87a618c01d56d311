"""The runner seam: `--on TARGET` / `on=` hands the run to the runner plugin its scheme names, lists runners as such,
and says what to install when none is."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from chainette import ConfigError, register_engine
from chainette.cli import main
from chainette.plugins import get_plugins

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reviews"
RUNNER = """
from chainette import hookimpl

CALLS = []


class Recording:
    def __init__(self, target):
        self.target = target

    def run(self, chain, inputs, options):
        CALLS.append((self.target, chain.name, options.on, options.limit))
        return "ran elsewhere"


@hookimpl
def make_runner(target):
    return None if "bad" in target else Recording(target)
"""


def test_on_without_the_runner_installed_says_what_to_install(tmp_path):
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": ""}
    args = ["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "--on", "ray"]
    done = subprocess.run([sys.executable, "-m", "chainette", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "No runner named 'ray' is installed" in done.stderr
    assert "pip install chainette-ray" in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_runner_plugin_gets_the_run_and_is_listed_as_a_runner(install_plugin, capsys):
    install_plugin("chainette-far", "far", "far_runner", RUNNER)
    from chainette.chain import Chain

    chain = Chain(name="nothing", steps=[])
    assert chain.run([{"a": 1}], on="far://host:1", limit=3) == "ran elsewhere"
    import far_runner  # type: ignore[import-not-found]

    assert far_runner.CALLS == [("far://host:1", "nothing", "far://host:1", 3)]
    assert main(["backends", "list", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed["far"]["kind"] == "runner"
    assert listed["far"]["status"] == "ok"
    assert listed["fake"]["kind"] == "backend"


def test_a_runner_is_no_backend_and_refuses_targets_it_does_not_know(install_plugin):
    install_plugin("chainette-far", "far", "far_runner", RUNNER)
    with pytest.raises(ConfigError, match="'far' .* is a runner, not a backend"):
        register_engine("e", backend="far", model="m")
    with pytest.raises(ConfigError, match="Runner 'far' does not run on 'far://bad:1'"):
        get_plugins().runner("far://bad:1")


def test_a_broken_runner_says_it_failed_to_load(install_plugin):
    install_plugin("chainette-far", "far", "far_broken_runner", "raise RuntimeError('no cluster library')")
    with pytest.raises(ConfigError, match="Runner 'far' .* failed to load: import failed: RuntimeError: no cluster library"):
        get_plugins().runner("far")


def test_an_empty_target_is_refused():
    from chainette.run.options import RunOptions

    with pytest.raises(ConfigError, match="runner target .* is empty"):
        RunOptions(on=" ")
