"""`import chainette` stays light: no backend, HTTP, CLI or UI library is imported until used; and no module of the
four packages imports, however indirectly, one that imports it back."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from importlib.util import resolve_name
from pathlib import Path
import subprocess
import sys

import pytest

BACKEND_MODULES = (
    "openai",
    "httpx2",
    "httpx",
    "vllm",
    "chainette_openai",
    "chainette_vllm",
    "chainette_ollama",
    "chainette_ray",
    "chainette_anthropic",
    "anthropic",
    "chainette_gemini",
    "google",
)
"""The plugins and the clients they talk through: loaded by a run, never by `import chainette` or the CLI's help."""
HEAVY = (*BACKEND_MODULES, "typer", "rich", "aiohttp", "ray", "jinja2")


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


def test_declaring_a_chain_loads_no_plugin_machinery():
    assert "pluggy" not in imported_after(f"{STEP}\nfrom chainette import Chain\nChain(name='c', steps=[step])")


ROOT = Path(__file__).resolve().parents[2]
# The five packages' sources in this checkout (not what is installed: the core-only CI stage installs no backend).
PACKAGES = {
    "chainette": ROOT / "chainette-core/src/chainette",
    "chainette_openai": ROOT / "chainette-openai/src/chainette_openai",
    "chainette_vllm": ROOT / "chainette-vllm/src/chainette_vllm",
    "chainette_ollama": ROOT / "chainette-ollama/src/chainette_ollama",
    "chainette_ray": ROOT / "chainette-ray/src/chainette_ray",
    "chainette_anthropic": ROOT / "chainette-anthropic/src/chainette_anthropic",
    "chainette_gemini": ROOT / "chainette-gemini/src/chainette_gemini",
}


def import_graph() -> dict[str, set[str]]:
    """Each module of PACKAGES with the modules of PACKAGES it imports, at module level or inside a function; imports
    under `if TYPE_CHECKING:` are left out (they never run). `from a import b` is an import of module `a.b` when there is
    one, else of `a`."""
    files = {}
    for root in PACKAGES.values():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in run_time_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
                imported |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names}
        graph[name] = {module for module in imported if module in files and module != name}
    return graph


def run_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under an `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (inner for statement in node.orelse for inner in [statement, *run_time_nodes(statement)])
            continue
        yield node
        yield from run_time_nodes(node)


def test_the_packages_import_no_module_that_imports_them_back():
    graph = import_graph()
    assert {"chainette.nodes", "chainette_vllm.warm", "chainette_openai"} <= graph.keys()
    assert "chainette.errors" in graph["chainette.nodes"], "the walk sees module-level imports"
    assert "chainette_vllm.server" in graph["chainette_vllm"], "and those inside functions"
    assert "chainette.engines" not in graph["chainette.plugins"], "but not those under TYPE_CHECKING"
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_cli_help_and_builtin_commands_load_no_backend():
    for command in ("--help", "backends --help", "run --help"):
        code = f"import sys\nfrom chainette.cli import main\nsys.argv = ['chainette', *{command.split()!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass"
        loaded = imported_after(code)
        assert loaded.isdisjoint(BACKEND_MODULES), command
