"""Capture the live view (mid-run) and the end-of-run summary of a real run of examples/reviews, as SVG files for
the docs. The engine is the offline fake backend with some latency, so the bars and rates are those of a run.

Usage: python scripts/docs_images.py [--out docs/images] [--rows 240] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 124


def capture(out: Path, rows: int, latency: float) -> list[Path]:
    """Run the reviews example over `rows` rows and write live-view.svg and summary.svg into `out`."""
    sys.path.insert(0, str(ROOT / "examples" / "reviews"))
    from chain import chain  # the example itself

    from chainette import register_engine
    from chainette.ui.live import render_state
    from chainette.ui.summary import summary

    register_engine("llm", backend="fake", model="fake-model", latency=latency, max_concurrency=8)
    lines = (ROOT / "examples" / "reviews" / "inputs.jsonl").read_text().splitlines()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        Path("reviews.jsonl").write_text("\n".join(lines[index % len(lines)] for index in range(rows)) + "\n")
        halfway = Halfway("to_fr")
        result = chain.run("reviews.jsonl", output_dir="runs/reviews", reporter=halfway, cache=False)  # every row requested
        shots = {"live-view.svg": halfway.frame or render_state(halfway.state, time.monotonic())}
        shots["summary.svg"] = summary(result.stats, "runs/reviews")
    written = []
    for name, renderable in shots.items():
        console = Console(record=True, width=WIDTH, force_terminal=True, color_system="truecolor", file=io.StringIO())
        console.print(renderable)
        (out / name).write_text(console.export_svg(title="chainette run examples/reviews/chain.py:chain -i reviews.jsonl -o runs/reviews"))
        written.append(out / name)
    return written


class Halfway:
    """A reporter that keeps the live view's frame of the moment node `node` is half done."""

    interval = 0.1

    def __init__(self, node: str):
        from chainette.ui.state import RunState

        self.node, self.state, self.frame = node, RunState(), None

    def __call__(self, event: Any) -> None:
        from chainette.events import Progress
        from chainette.ui.live import render_state

        self.state(event)
        node = self.state.nodes.get(self.node)
        if isinstance(event, Progress) and self.frame is None and node is not None and node.total and node.done >= node.total // 2:
            self.frame = render_state(self.state, time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args()
    for path in capture(args.out, args.rows, args.latency):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
