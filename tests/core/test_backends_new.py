"""`chainette backends new NAME`: the skeleton of a backend distribution, which imports, registers and passes its own suite."""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path
import subprocess
import sys

import pytest

import chainette
from chainette import register_engine
from chainette.cli import main
from chainette.cli.skeleton import core_requirement, render
from chainette.errors import ChainetteError
from chainette.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[2]
FILES = {"pyproject.toml", "README.md", "src/chainette_my_backend/__init__.py", "tests/test_conformance.py"}


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """The skeleton for backend `my_backend`, written by the command into tmp_path/chainette-my_backend."""
    monkeypatch.chdir(tmp_path)
    assert main(["backends", "new", "my_backend"]) == 0
    assert "chainette-my_backend" in capsys.readouterr().out
    return tmp_path / "chainette-my_backend"


def test_writes_the_distribution_with_its_entry_point(generated: Path):
    assert {str(p.relative_to(generated)) for p in generated.rglob("*") if p.is_file()} == FILES
    pyproject = (generated / "pyproject.toml").read_text()
    assert '[project.entry-points."chainette.backends"]\nmy_backend = "chainette_my_backend"' in pyproject
    assert 'name = "chainette-my_backend"' in pyproject
    assert f'dependencies = ["chainette-core{core_requirement(chainette.__version__)}"]' in pyproject
    assert "TODO" in (generated / "src/chainette_my_backend/__init__.py").read_text()


def test_generated_package_imports_and_registers(generated: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(generated / "src"))
    module = importlib.import_module("chainette_my_backend")
    plugins = get_plugins()
    plugins.register("my_backend", module)
    info = plugins.found["my_backend"]
    assert info.error is None
    assert {"engine_options", "make_client", "translate_sampling"} <= set(info.hooks)
    config = register_engine("mine", backend="my_backend", model="m", max_concurrency=3)
    assert type(config.options).__name__ == "MyBackendOptions" and config.options.max_concurrency == 3


def test_generated_conformance_test_parses(generated: Path):
    tree = ast.parse((generated / "tests/test_conformance.py").read_text())
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert cls.name == "TestMyBackendBackend"
    assert [base.id for base in cls.bases if isinstance(base, ast.Name)] == ["BackendConformance"]
    assigned = {t.id: ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign) for t in n.targets}
    assert assigned["backend"] == "my_backend"


def test_generated_backend_passes_its_conformance_suite(generated: Path):
    """Installed the cheap way (a dist-info with the entry point next to the sources), the skeleton passes its own tests."""
    info = generated / "src" / "chainette_my_backend-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chainette-my_backend\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[chainette.backends]\nmy_backend = chainette_my_backend\n")
    env = {**os.environ, "PYTHONPATH": str(generated / "src")}
    env.pop("CHAINETTE_LOAD_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=generated, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_refuses_an_existing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chainette-taken").mkdir()
    assert main(["backends", "new", "taken"]) == 1
    assert "chainette-taken already exists" in capsys.readouterr().err
    assert not any((tmp_path / "chainette-taken").iterdir())


@pytest.mark.parametrize("name", ["9lives", "My", "has-dash", "trailing_", "", "dotted.name"])
def test_refuses_a_name_that_cannot_be_a_package(name: str):
    with pytest.raises(ChainetteError, match="cannot name a backend"):
        render(name)


def test_core_requirement_follows_the_installed_core():
    assert core_requirement("0.1.0") == ">=0.1,<0.2"
    assert core_requirement("0.12.3.dev1") == ">=0.12,<0.13"
    assert core_requirement("1.4.2") == ">=1.4,<2"


def test_skeleton_has_the_layout_of_the_echo_example():
    example = ROOT / "examples" / "plugin-echo"
    assert all((example / path).is_file() for path in render("echo")), "the skeleton and examples/plugin-echo have drifted apart"
