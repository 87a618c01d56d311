"""The one retry policy every backend gets: exponential backoff with jitter, honouring Retry-After."""

from __future__ import annotations

import asyncio
import random

from chainette.client import Answer, Client, Request
from chainette.engines import EngineConfig
from chainette.errors import EngineError, RetryableError, RowError

BASE_DELAY = 0.5
MAX_DELAY = 30.0


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt + 1`; a server's Retry-After wins when given."""
    if retry_after is not None:
        return retry_after + random.uniform(0, BASE_DELAY)
    return min(MAX_DELAY, BASE_DELAY * 2**attempt) * random.uniform(0.5, 1.0)


async def complete_with_retries(client: Client, request: Request, engine: EngineConfig, slots: asyncio.Semaphore) -> Answer:
    """Send `request`, retrying transient failures up to the engine's `max_retries`.

    Raises RowError when retries are spent, or EngineError when the endpoint stays unreachable.
    """
    attempt = 0
    while True:
        try:
            async with slots:
                return await client.complete(request)
        except RetryableError as exc:
            if attempt >= engine.options.max_retries:
                detail = f"{exc} (gave up after {attempt + 1} attempts)"
                if exc.kind == "connection":
                    raise EngineError(detail, kind="unreachable") from None
                raise RowError(detail, kind=exc.kind, raw=exc.raw) from None
            await asyncio.sleep(backoff_delay(attempt, exc.retry_after))
            attempt += 1
