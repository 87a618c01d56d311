"""The generated CLI reference covers every command, argument and option of the app, plugins' included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer.main

from chainette.cli.app import build_app

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gen_cli_reference.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def walk(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, f"{path} {name}")


def test_reference_lists_every_command_and_option():
    text = load_generator().render()
    commands = dict(walk(typer.main.get_command(build_app(with_plugins=True)), "chainette"))
    assert {"chainette run", "chainette inspect", "chainette backends list", "chainette warmup", "chainette kill", "chainette ps"} <= set(
        commands
    )
    for path, command in commands.items():
        assert f"## `{path}`" in text
        for param in command.params:
            names = param.opts if param.opts[0].startswith("-") else [param.metavar or param.name.upper()]
            for name in names:
                assert f"`{name}" in text.split(f"## `{path}`")[1], f"{path}: {name} missing"
            if getattr(param, "help", None):
                assert param.help in text


def test_plugin_commands_name_their_distribution():
    text = load_generator().render()
    for command in ("warmup", "kill", "ps"):
        section = text.split(f"## `chainette {command}`")[1].split("\n## ")[0]
        assert "Added by the `chainette-vllm` plugin" in section
    assert "Added by" not in text.split("## `chainette run`")[1].split("\n## ")[0]
