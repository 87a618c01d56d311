"""Chainette's benchmark: every throughput, overhead, memory, start-up, scale-out and cache goal, and the pipelining,
first-row and Ray goals, each against a baseline measured in the same run (one module per goal in benchmarks/goals).
Prints a table: figure, value, baseline, ratio, goal, met (or "reported"). Every run starts with an empty response
cache of its own (never the user's), so that no figure is a cache hit but those of the fully cached reruns (goals 3
and 6).

Usage: python benchmarks/run.py [--quick] [--strict] [--only GOAL[,GOAL...]]

Exits 0 once the table is printed; with --strict, 1 when a goal is not met.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
import os
import sys

from goals import adaptive, cache, first_row, memory, overhead, pipeline, ray, resume, scale_out, start_up, state_size, throughput
from harness import Figure, Outcome, fresh_cache


@dataclass(frozen=True)
class Sizes:
    """How much each goal runs: `requests` to a fake server, `rows` through the fake backend, `big` rows for the
    memory goal, `relay` rows through the chains of one server per step."""

    requests: int
    rows: int
    big: int
    relay: int


FULL = Sizes(requests=3_000, rows=100_000, big=1_000_000, relay=480)
QUICK = Sizes(requests=600, rows=10_000, big=50_000, relay=96)
GOALS: dict[str, Callable[[Sizes], Outcome]] = {
    "throughput": lambda sizes: throughput.measure(sizes.requests),
    "overhead": lambda sizes: overhead.measure(sizes.rows),
    "state-size": lambda sizes: state_size.measure(sizes.rows // 10),
    "resume": lambda sizes: resume.measure(sizes.rows),
    "memory": lambda sizes: memory.measure(sizes.big),
    "start-up": lambda sizes: start_up.measure(),
    "scale-out": lambda sizes: scale_out.measure(sizes.requests // 2),
    "cache": lambda sizes: cache.measure(sizes.requests, sizes.rows),
    "pipeline": lambda sizes: pipeline.measure(sizes.relay),
    "first-row": lambda sizes: first_row.measure(),
    "adaptive": lambda sizes: adaptive.measure(max(sizes.relay, 3 * adaptive.CONCURRENCY)),
    "ray": lambda sizes: ray.measure(6 * sizes.requests, sizes.rows),
}
"""Every goal by name, in the order they run, each measured at the sizes the run was given."""


def main() -> None:
    args = parser().parse_args()
    os.environ.setdefault("CHAINETTE_LOAD_PLUGINS", "openai,vllm,ollama,ray")
    sizes = QUICK if args.quick else FULL
    with fresh_cache():
        outcomes = [GOALS[name](sizes) for name in args.only]
    figures = [figure for outcome in outcomes for figure in outcome.figures]
    print_table(figures)
    for outcome in outcomes:
        for note in outcome.notes:
            print(note)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    unmet = [figure for outcome in outcomes for figure in outcome.unmet]
    binding = sum(figure.binding for figure in figures)
    print(f"{binding - len(unmet)} of {binding} goals met" + "".join(f"\n  not met: {figure.name}" for figure in unmet))
    sys.exit(1 if args.strict and unmet else 0)


def parser() -> argparse.ArgumentParser:
    """The command line: --quick, --strict, --only."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test (goals may then not be met)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met (by default the table is the result)")
    parser.add_argument(
        "--only",
        type=goal_names,
        default=list(GOALS),
        metavar="GOAL[,GOAL...]",
        help=f"run only these goals, in the usual order (default: all of {', '.join(GOALS)})",
    )
    return parser


def goal_names(value: str) -> list[str]:
    """The goals a comma-separated --only names, in the order they run; an unknown name is an error naming them all."""
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - GOALS.keys())
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"no goal named {', '.join(unknown) or repr(value)}: name one or more of {', '.join(GOALS)}")
    return [name for name in GOALS if name in names]


def print_table(figures: list[Figure]) -> None:
    """The figures as aligned columns under a header."""
    header = ["figure", "value", "baseline", "ratio", "goal", "met?"]
    rows = [header] + [cells(figure) for figure in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def cells(figure: Figure) -> list[str]:
    """A figure's line of the table."""
    return [
        figure.name,
        f"{figure.value:,.1f} {figure.unit}",
        f"{figure.baseline:,.1f} {figure.unit}",
        f"{figure.ratio:.2f}",
        figure.goal,
        figure.verdict,
    ]


if __name__ == "__main__":
    main()
