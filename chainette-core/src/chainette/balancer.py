"""Spreading one engine's requests over several endpoints (replicas of a server behind no router).

Each request goes to the endpoint with the fewest requests outstanding. An endpoint whose request
fails transiently is set aside for a cool-down that doubles with each consecutive failure, and is
tried again after it; the core's retry policy sends the retried request elsewhere meanwhile.
The engine counts as unreachable only when no endpoint answers.
"""

from __future__ import annotations

from dataclasses import dataclass
import time

from chainette.client import Answer, Client, Request
from chainette.errors import RetryableError

SET_ASIDE_SECONDS = 2.0
MAX_SET_ASIDE_SECONDS = 60.0


@dataclass
class Endpoint:
    """One replica: its client, requests outstanding, and until when it is set aside."""

    url: str
    client: Client
    outstanding: int = 0
    failures: int = 0
    aside_until: float = 0.0


class BalancedClient:
    """A Client over several endpoints' clients, least outstanding requests first."""

    def __init__(self, endpoints: list[Endpoint]):
        self.endpoints = endpoints

    def pick(self) -> Endpoint:
        now = time.monotonic()
        ready = [e for e in self.endpoints if e.aside_until <= now]
        if not ready:
            return min(self.endpoints, key=lambda e: e.aside_until)
        return min(ready, key=lambda e: e.outstanding)

    async def complete(self, request: Request) -> Answer:
        endpoint = self.pick()
        endpoint.outstanding += 1
        try:
            answer = await endpoint.client.complete(request)
        except RetryableError as exc:
            endpoint.failures += 1
            pause = min(MAX_SET_ASIDE_SECONDS, SET_ASIDE_SECONDS * 2 ** (endpoint.failures - 1))
            endpoint.aside_until = time.monotonic() + pause
            if exc.kind == "connection" and any(e.failures == 0 for e in self.endpoints):
                exc.kind = "replica_down"
            raise
        finally:
            endpoint.outstanding -= 1
        endpoint.failures = 0
        return answer

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.aclose()
