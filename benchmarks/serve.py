"""A loopback fake LLM server in its own process, for the benchmarks: prints its port, serves until stdin closes.

SIGTERM ends it at once, like a replica that goes away: open connections are dropped.

Usage: python benchmarks/serve.py LATENCY_SECONDS [CAPACITY [REFUSE_STATUS]]

With REFUSE_STATUS (429), a request beyond CAPACITY is answered at once with that status instead of queueing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from chainette.testing import FakeServer

ANSWER = json.dumps({"label": "positive", "score": 0.5})


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_now)
    latency = float(sys.argv[1])
    capacity = int(sys.argv[2]) if len(sys.argv) > 2 else None
    refuse = int(sys.argv[3]) if len(sys.argv) > 3 else None
    with FakeServer(latency=latency, capacity=capacity, refuse_beyond=refuse, respond=lambda body: ANSWER) as server:
        server.requests = _Discard()
        print(server.port, flush=True)
        sys.stdin.read()


def _exit_now(signum: int, frame: object) -> None:
    """End the process now, without waiting for in-flight requests (a graceful stop could take the server's shutdown timeout)."""
    os._exit(0)


class _Discard(list[dict[str, Any]]):
    """Keeps no request: a benchmark server must not grow."""

    def append(self, item: dict[str, Any]) -> None:
        pass


if __name__ == "__main__":
    main()
