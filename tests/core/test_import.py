"""`import chainette` stays light: no backend, HTTP, CLI or UI library is imported until used."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "openai",
    "httpx2",
    "httpx",
    "vllm",
    "typer",
    "rich",
    "aiohttp",
    "chainette_openai",
    "chainette_vllm",
    "chainette_ollama",
    "jinja2",
)


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_import_chainette_is_light():
    assert imported_after("import chainette").isdisjoint(HEAVY)


def test_declaring_a_chain_imports_no_backend_or_http():
    code = (
        "from pydantic import BaseModel\nfrom chainette import Chain, Step, register_engine\n"
        "class M(BaseModel):\n    text: str\n"
        "register_engine('e', backend='fake', model='m')\n"
        "Chain(name='c', steps=[Step(id='s', input_model=M, output_model=M, engine_name='e', user_prompt='{{text}}')])"
    )
    assert imported_after(code).isdisjoint(set(HEAVY) - {"jinja2"})


STEP = (
    "from pydantic import BaseModel\nfrom chainette import Step\n"
    "class M(BaseModel):\n    text: str\n"
    "step = Step(id='s', input_model=M, output_model=M, engine_name='e', user_prompt='{{text}}', sampling={'temperature': 0})"
)


def test_declaring_a_step_loads_no_plugin_machinery():
    assert "pluggy" not in imported_after(STEP)


@pytest.mark.xfail(
    strict=True,
    reason="chainette.chain imports what runs a chain (plugins, the executor) at module level; this passes once "
    "Chain.run hands the run to the run session, imported when a run starts",
)
def test_declaring_a_chain_loads_no_plugin_machinery():
    assert "pluggy" not in imported_after(f"{STEP}\nfrom chainette import Chain\nChain(name='c', steps=[step])")


def test_cli_help_and_builtin_commands_load_no_backend():
    for command in ("--help", "backends --help", "run --help"):
        code = f"import sys\nfrom chainette.cli import main\nsys.argv = ['chainette', *{command.split()!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass"
        loaded = imported_after(code)
        assert loaded.isdisjoint({"openai", "httpx2", "httpx", "vllm", "chainette_openai", "chainette_vllm", "chainette_ollama"}), command
