"""Every example chain in examples/ runs on the offline fake backend, as its README says, and answers every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainette.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHAINS = sorted(
    path
    for pattern in ("*/chain.py", "*/chain.yaml")
    for path in EXAMPLES.glob(pattern)
    if not (path.parent / "pyproject.toml").exists()  # a plugin distribution, tested by its own CI script
)


def test_there_are_at_least_five_examples():
    assert len(CHAINS) >= 5, [str(path) for path in CHAINS]


@pytest.mark.parametrize("chain", CHAINS, ids=lambda path: path.parent.name)
def test_example_runs(chain: Path, tmp_path):
    inputs = next(chain.parent.glob("inputs.*"))
    assert main(["run", str(chain), "-i", str(inputs), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["input"]["invalid"] == 0
    assert all(step["failed"] == 0 for step in run["steps"].values()), run["steps"]
    assert (chain.parent / "README.md").exists()
