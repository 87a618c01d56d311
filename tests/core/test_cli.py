"""The command line: run, inspect, backends list, version; errors as one paragraph with a non-zero exit."""

from __future__ import annotations

import json
import os
from pathlib import Path
import site
import subprocess
import sys

import pytest

from chainette.cli import main
from chainette.cli.loading import load_chain
from chainette.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "reviews"


def chainette(*args: str, cwd: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "chainette", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_run_example_on_fake_backend(tmp_path):
    out = tmp_path / "out"
    done = chainette("run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "reviews: completed" in done.stdout
    flattened = [json.loads(line) for line in (out / "flattened" / "000.jsonl").read_text().splitlines()]
    assert flattened and all("summary.headline" in row and "fr.translation" in row for row in flattened)
    run = json.loads((out / "run.json").read_text())
    assert run["input"]["rows"] == 6
    assert run["steps"]["sentiment"]["ok"] == 6


def test_chain_found_without_attribute_and_by_module(tmp_path):
    assert main(["run", str(EXAMPLE / "chain.py"), "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "a")]) == 0
    done = chainette("inspect", "chain:chain", cwd=EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "branch fr → join as fr" in done.stdout
    assert "step summary → Summary  engine llm (fake: fake-model)" in done.stdout


def test_errors_are_one_paragraph_without_traceback(tmp_path):
    done = chainette("run", f"{EXAMPLE}/chain.py:nope", "-i", "x.jsonl", "-o", str(tmp_path / "o"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "has no Chain named 'nope' (Chains found: chain)" in done.stderr


def test_debug_shows_the_traceback(tmp_path):
    done = chainette("--debug", "run", f"{EXAMPLE}/chain.py:nope", "-i", "x.jsonl", "-o", str(tmp_path / "o"))
    assert done.returncode != 0
    assert "Traceback" in done.stderr


WARNING_CHAIN = """import warnings
from pydantic import BaseModel
from chainette import Chain, Step, register_engine
warnings.warn("mind the gap", UserWarning)
class Row(BaseModel):
    text: str
register_engine("llm", backend="fake", model="m")
chain = Chain(name="w", steps=[Step(id="s", input_model=Row, output_model=Row, engine_name="llm", user_prompt="{{text}}")])
"""


def test_warnings_show_their_kind_and_message_and_with_debug_where_they_come_from(tmp_path):
    (tmp_path / "warning_chain.py").write_text(WARNING_CHAIN)
    plain = chainette("inspect", "warning_chain.py:chain", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "UserWarning: mind the gap\n" in plain.stderr
    assert "warning_chain.py" not in plain.stderr
    debug = chainette("--debug", "inspect", "warning_chain.py:chain", cwd=tmp_path)
    assert "warning_chain.py:4: UserWarning: mind the gap" in debug.stderr


def test_bad_template_in_user_chain_is_reported(tmp_path):
    path = tmp_path / "bad_chain.py"
    path.write_text(
        "from pydantic import BaseModel\nfrom chainette import Chain, Step\n"
        "class In(BaseModel):\n    text: str\n"
        "class Out(BaseModel):\n    label: str\n"
        "chain = Chain(name='bad', steps=[Step(id='s', input_model=In, output_model=Out, engine_name='e', user_prompt='{{txet}}')])\n"
    )
    done = chainette("inspect", str(path))
    assert done.returncode == 1
    assert "Step 's' user_prompt: template variable 'txet' cannot exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_chain_file_named_like_a_standard_module_is_refused_in_a_paragraph(tmp_path):
    chain = tmp_path / "numbers.py"  # imported as `numbers`, it would stand in for the standard library's
    chain.write_text((EXAMPLE / "chain.py").read_text())
    done = chainette("run", str(chain), "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is named like the Python module 'numbers'" in done.stderr and "numbers_chain.py" in done.stderr


def test_a_chain_file_named_like_an_installed_module_not_imported_yet_is_refused(tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "labelkit"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    (tmp_path / "site-packages" / "leftover").mkdir()  # a bare folder some distribution left: no module to stand in for
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(tmp_path / "site-packages")])
    for name in ("labelkit", "leftover"):
        (tmp_path / f"{name}.py").write_text((EXAMPLE / "chain.py").read_text())
    with pytest.raises(ConfigError, match=r"named like the Python module 'labelkit' \(installed at .*labelkit.__init__\.py\)"):
        load_chain(str(tmp_path / "labelkit.py"))
    assert load_chain(str(tmp_path / "leftover.py")).name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_an_input_that_is_a_pipe_is_refused_in_a_paragraph(tmp_path):
    os.mkfifo(tmp_path / "rows.jsonl")  # nothing writes to it: a run that opened it would wait forever
    done = chainette("run", f"{EXAMPLE}/chain.py", "-i", str(tmp_path / "rows.jsonl"), "-o", str(tmp_path / "o"), timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "rows.jsonl: it is not a regular file (a pipe or a device)" in done.stderr


def test_missing_input_file_and_non_empty_output(tmp_path):
    done = chainette("run", f"{EXAMPLE}/chain.py", "-i", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Cannot read input file" in done.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    done = chainette("run", f"{EXAMPLE}/chain.py", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "full"))
    assert done.returncode == 1 and "is not empty" in done.stderr


def test_engines_yaml_replaces_engine_and_typos_name_the_line(tmp_path):
    engines = tmp_path / "engines.yaml"
    engines.write_text("engines:\n  - name: llm\n    backend: fake\n    model: other\n    latencyy: 1\n")
    done = chainette(
        "run", f"{EXAMPLE}/chain.py", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "--engines", str(engines)
    )
    assert done.returncode == 1
    assert "engines.yaml:2: Engine 'llm': backend 'fake' has no option 'latencyy'. Did you mean 'latency'?" in done.stderr
    engines.write_text("engines:\n  - name: llm\n    backend: fake\n    model: other-model\n")
    done = chainette("run", f"{EXAMPLE}/chain.py", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "-e", str(engines))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "graph.json").read_text())["engines"]["llm"]["model"] == "other-model"


def test_an_engines_file_must_define_exactly_the_engines_the_steps_use(tmp_path):
    """A misspelt engine name used to leave the steps on the chain file's fake default, exit 0."""
    engines = tmp_path / "engines.yaml"
    engines.write_text("engines:\n  - name: lm\n    backend: fake\n    model: other\n")
    args = ["run", f"{EXAMPLE}/chain.py", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "-e", str(engines)]
    done = chainette(*args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "engines.yaml:2: engine 'lm' is used by no step (the steps use: llm). Did you mean 'llm'?" in done.stderr
    assert not (tmp_path / "o" / "run.json").exists(), "nothing ran"
    engines.write_text("engines:\n  - name: llm\n    backend: fake\n    model: m\n  - name: judge\n    backend: fake\n    model: m\n")
    assert "engines.yaml:5: engine 'judge' is used by no step" in chainette(*args).stderr
    engines.write_text("engines: []\n")
    done = chainette(*args)
    assert done.returncode == 1
    assert "use engine 'llm', which this file does not define." in done.stderr
    assert "steps 'sentiment', " in done.stderr


def test_some_rows_failed_exits_3_and_names_retry_errors(tmp_path):
    chain = tmp_path / "flaky.py"
    chain.write_text(
        "from pydantic import BaseModel\n"
        "from chainette import Chain, apply\n"
        "class Text(BaseModel):\n    text: str\n"
        "def check(item: Text) -> Text:\n"
        "    if item.text == 'bad':\n        raise ValueError('bad row')\n    return item\n"
        "chain = Chain(name='flaky', steps=[apply(check, id='check', input_model=Text, output_model=Text)])\n"
    )
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "good"}\n{"text": "bad"}\n{"text": "fine"}\n')
    done = chainette("run", f"{chain}:chain", "-i", str(inputs), "-o", str(tmp_path / "o"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Exit status 3: 1 input row failed: run the same command with --retry-errors" in done.stdout
    inputs.write_text('{"text": "good"}\n{"txt": "typo"}\n')
    done = chainette("run", f"{chain}:chain", "-i", str(inputs), "-o", str(tmp_path / "o2"))
    assert done.returncode == 3 and "1 input row not valid" in done.stdout
    inputs.write_text('{"txt": "typo"}\n')
    assert chainette("run", f"{chain}:chain", "-i", str(inputs), "-o", str(tmp_path / "o3")).returncode == 1


def test_summary_off_a_terminal_does_not_wrap_at_80_columns(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    args = ["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "a-rather-long-output-dir")]
    done = subprocess.run(
        [sys.executable, "-m", "chainette", *args], capture_output=True, text=True, env={**env, "CHAINETTE_LOAD_PLUGINS": ""}
    )
    assert done.returncode == 0, done.stderr
    [outputs] = [line for line in done.stdout.splitlines() if line.startswith("Outputs: ")]
    assert "errors.jsonl" in outputs and len(outputs) > 80, "the outputs line is whole, not wrapped"


def test_backends_list_json(capsys):
    assert main(["backends", "list", "--json"]) == 0
    found = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert found["fake"]["status"] == "ok"
    assert found["fake"]["distribution"] == "chainette-core"


def test_version(capsys):
    import chainette

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chainette {chainette.__version__}"


def test_plugins_add_commands(install_plugin, capsys):
    install_plugin(
        "chainette-hello",
        "hello",
        "hello_backend",
        """
        from chainette import hookimpl

        @hookimpl
        def make_client(config):
            raise NotImplementedError

        @hookimpl
        def register_commands(app):
            @app.command("hello")
            def hello(name: str):
                print(f"hello {name}")
        """,
    )
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"


def test_a_plugin_whose_commands_fail_is_shown_broken_and_the_cli_works(install_plugin, capsys):
    install_plugin(
        "chainette-badcmd",
        "badcmd",
        "badcmd_backend",
        """
        from chainette import hookimpl

        @hookimpl
        def make_client(config):
            raise NotImplementedError

        @hookimpl
        def register_commands(app):
            raise RuntimeError("no commands today")
        """,
    )
    assert main(["backends", "list", "--json"]) == 0
    found = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert found["badcmd"]["status"] == "error: register_commands failed: RuntimeError: no commands today"
    assert found["fake"]["status"] == "ok"


def _help_screens() -> dict[tuple[str, ...], str]:
    """Each command path of the app, plugins' commands included, and the help it prints."""
    import typer
    from typer.testing import CliRunner

    from chainette.cli.app import build_app

    app = build_app(with_plugins=True)
    runner = CliRunner()
    screens = {}

    def walk(command, names):
        screens[names] = runner.invoke(app, [*names, "--help"], terminal_width=120).output
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*names, name))

    walk(typer.main.get_command(app), ())
    return screens


def test_help_shows_flags_without_a_type_and_arguments_in_capitals():
    screens = _help_screens()
    assert {("run",), ("push",), ("backends", "new")} <= set(screens)
    for names, text in screens.items():
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "<bool>" not in text and "{" not in usage, (names, text)
    assert "Usage: chainette run [OPTIONS] CHAIN " in screens[("run",)]
    assert "Usage: chainette push [OPTIONS] OUT REPO " in screens[("push",)]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("chain.txt:chain", "Chain 'chain.txt' is neither a .py nor a .yaml file: name it as path/to/file.py:attr"),
        ("foo.pyx:chain", "Chain 'foo.pyx' is neither a .py nor a .yaml file"),
        ("./chain.txt", "Chain './chain.txt' is neither a .py nor a .yaml file"),
        ("", "No chain given: name it as path/to/file.py:attr, package.module:attr or chain.yaml."),
        ("missing.py:chain", "Chain file missing.py does not exist."),
        ("missing.yaml", "Cannot read missing.yaml: No such file or directory."),
        ("holder.py:nope", "holder.py has no Chain named 'nope' (Chains found: chain)."),
        ("holder.py:number", "holder.py:number is of type int, not a Chain (Chains found: chain)."),
        ("holder:Chain", "holder:Chain is the class Chain, not a Chain (Chains found: chain)."),
    ],
)
def test_a_chain_reference_that_is_not_a_chain_is_one_paragraph(tmp_path, reference, expected):
    (tmp_path / "chain.txt").write_text("x = 1\n")
    (tmp_path / "foo.pyx").write_text("x = 1\n")
    (tmp_path / "holder.py").write_text(WARNING_CHAIN.replace('warnings.warn("mind the gap", UserWarning)', "number = 1"))
    done = chainette("inspect", reference, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: {expected}") and done.stderr.count("\n") == 1, done.stderr
