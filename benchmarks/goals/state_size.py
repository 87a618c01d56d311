"""Goal 2b: the run's state on disk (its frontiers) per row grows linearly with the number of steps: a chain of
ten steps keeps at most ten times what a one-step chain keeps."""

from __future__ import annotations

from pathlib import Path
import tempfile

from chains import fake_steps
from harness import Figure, Outcome, write_inputs

STATE_FOLDER = ".chainette"
"""Where a run keeps its state, under its output folder (docs/running.md, "resuming")."""


def measure(count: int, length: int = 10) -> Outcome:
    """Bytes of state per row of a `length`-step chain over `count` rows, against `length` times a one-step chain's."""
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in.jsonl"
        write_inputs(inputs, count)
        per_row = {steps: state_bytes(steps, inputs, Path(folder) / f"out-{steps}") / count for steps in (1, length)}
    linear = length * per_row[1]
    figure = f"2. state on disk per row, {length} steps vs {length} x one step"
    return Outcome((Figure(figure, per_row[length], linear, "<= 1.0 x (linear)", per_row[length] <= linear, unit="bytes"),))


def state_bytes(steps: int, inputs: Path, output: Path) -> int:
    """The size of the state files (JSONL) a run of a `steps`-step chain over `inputs` leaves in its output folder."""
    fake_steps(steps).run(inputs, output_dir=output)
    files = list((output / STATE_FOLDER).glob("*.jsonl"))
    assert files, f"no state file in {output / STATE_FOLDER}: where does a run keep its state now?"
    return sum(path.stat().st_size for path in files)
