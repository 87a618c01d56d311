"""The benchmark still runs against the current core: every goal module measures at small sizes (their figures'
values are not checked, the machine being shared; the goals' own checks are: every row answered, cache hits where
due, state on disk), and the driver's --only picks goals and refuses an unknown one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import importlib
from pathlib import Path
import re
import subprocess
import sys
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "throughput": ("1.", lambda goal: goal.measure(16)),
    "overhead": ("2.", lambda goal: goal.measure(100)),
    "state_size": ("2.", lambda goal: goal.measure(20)),
    "resume": ("2.", lambda goal: goal.measure(200)),
    "memory": ("3.", lambda goal: goal.measure(200)),
    "start_up": ("4.", lambda goal: goal.measure()),
    "scale_out": ("5.", lambda goal: goal.measure(32)),
    "cache": ("6.", lambda goal: goal.measure(16, 100)),
    "pipeline": ("7.", lambda goal: goal.measure(16)),
    "first_row": ("8.", lambda goal: goal.measure(32)),
    "adaptive": ("9.", lambda goal: goal.measure(40)),
}
"""Each goal module, the number its figures carry, and a call of its `measure` at small sizes."""


@pytest.fixture
def goals(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """Imports a goal module as benchmarks/run.py does (its folder first on sys.path); forgets the benchmark's
    modules after the test, as their names (chains, harness, goals) are not unique outside that folder."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("CHAINETTE_LOAD_PLUGINS", "openai,vllm,ollama")
    yield lambda name: importlib.import_module(f"goals.{name}")
    for name, module in list(sys.modules.items()):
        if BENCHMARKS in Path(getattr(module, "__file__", None) or "/").parents:
            del sys.modules[name]


@pytest.mark.parametrize("name", SMALL)
def test_every_goal_measures_at_small_sizes(goals: Callable[[str], Any], name: str) -> None:
    number, measure = SMALL[name]
    outcome = measure(goals(name))
    assert outcome.figures
    for figure in outcome.figures:
        assert figure.name.startswith(number), figure
        assert figure.value >= 0 and figure.baseline > 0, figure
        assert figure.verdict in {"met", "NOT MET", "reported"}


def test_only_runs_the_goals_it_names() -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--only", "start-up"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = [line.split()[0] for line in done.stdout.splitlines() if re.match(r"\d+\. ", line)]
    assert figures == ["4.", "4."]
    assert "of 2 goals met" in done.stdout


def test_only_refuses_an_unknown_goal_and_names_them_all() -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--only", "overhead,startup"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no goal named startup" in done.stderr
    assert "throughput, overhead, state-size, resume, memory, start-up, scale-out, cache, pipeline, first-row" in done.stderr
    assert done.stdout == ""
