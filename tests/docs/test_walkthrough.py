"""docs/writing-a-backend.md, followed literally, makes a backend that passes the conformance suite.

Installed the cheap way (a dist-info with the entry point of the walkthrough's pyproject next to its sources);
.ci/walkthrough.sh does it the user's way, with pip in a clean venv.
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest

from chainette.testing.conformance.harness import NO_SERVER

from .runner import ROOT, load_doc_blocks

doc_blocks = load_doc_blocks()
PAGE = ROOT / "docs" / "writing-a-backend.md"


def test_the_walkthrough_writes_a_package(tmp_path: Path) -> None:
    written = doc_blocks.write_files(doc_blocks.page_blocks(PAGE), tmp_path)
    assert {path.relative_to(tmp_path).as_posix() for path in written} == {
        "chainette-mybackend/pyproject.toml",
        "chainette-mybackend/src/chainette_mybackend/__init__.py",
        "chainette-mybackend/src/chainette_mybackend/client.py",
        "chainette-mybackend/tests/test_conformance.py",
    }


def test_the_walkthrough_backend_passes_its_conformance_suite(tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib")
    doc_blocks.write_files(doc_blocks.page_blocks(PAGE), tmp_path)
    package = tmp_path / "chainette-mybackend"
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    [(backend, module)] = project["entry-points"]["chainette.backends"].items()
    info = package / "src" / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text(f"[chainette.backends]\n{backend} = {module}\n")
    env = {**os.environ, "PYTHONPATH": str(package / "src")}
    env.pop("CHAINETTE_LOAD_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and NO_SERVER not in done.stdout, done.stdout  # the checks against the FakeServer ran
