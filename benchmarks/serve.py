"""A loopback fake LLM server in its own process, for the benchmarks: prints its port, serves until stdin closes.

Usage: python benchmarks/serve.py LATENCY_SECONDS [CAPACITY]
"""

from __future__ import annotations

import json
import sys

from chainette.testing import FakeServer

ANSWER = json.dumps({"label": "positive", "score": 0.5})


def main() -> None:
    latency = float(sys.argv[1])
    capacity = int(sys.argv[2]) if len(sys.argv) > 2 else None
    with FakeServer(latency=latency, capacity=capacity, respond=lambda body: ANSWER) as server:
        server.requests = _Discard()
        print(server.port, flush=True)
        sys.stdin.read()


class _Discard(list):
    """Keeps no request: a benchmark server must not grow."""

    def append(self, item: object) -> None:
        pass


if __name__ == "__main__":
    main()
