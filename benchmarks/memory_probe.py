"""Goal 3's probe, a process of its own: runs the two fake steps over a JSONL file and prints how many of the
second step's rows the response cache answered and this process's peak RSS in kB.

Usage: python benchmarks/memory_probe.py INPUTS OUTPUT_DIR
"""

from __future__ import annotations

import resource
import sys

from chains import SECOND, two_fake_steps


def main() -> None:
    result = two_fake_steps().run(sys.argv[1], output_dir=sys.argv[2])
    print(result.stats["steps"][SECOND]["cached"], own_peak_kb())


def own_peak_kb() -> int:
    """This process's own peak RSS in kB: VmHWM on Linux, as ru_maxrss keeps the parent's peak across fork and exec."""
    try:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmHWM")).split()[1])
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main()
