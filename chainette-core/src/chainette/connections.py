"""An engine's HTTP connections, kept in pools of at most `SHARD_SIZE`.

httpcore2's pool looks over every one of its connections twice a request (when the request comes in and when its
answer is closed): in one pool of 64, finding a connection cost more CPU than the rest of the request. So an engine
of more than `SHARD_SIZE` connections gets several pools (shards) of about equal size, and each request goes to the
shard with the fewest requests in flight. The rule kept: a request never waits for a connection in one shard while
another has one free, as long as no more requests are in flight than there are connections (the engine's window
keeps that); a shard counts a request in flight until its answer is closed, when its connection is free again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import httpx2

if TYPE_CHECKING:
    import ssl

SHARD_SIZE = 8


def pooled_transport(connections: int, verify: ssl.SSLContext) -> httpx2.AsyncBaseTransport:
    """The transport of an engine of `connections` connections: one pool, or shards of at most SHARD_SIZE."""
    if connections <= SHARD_SIZE:
        return _pool(connections, verify)
    return ShardedTransport(connections, verify)


class ShardedTransport(httpx2.AsyncBaseTransport):
    """`connections` connections in shards of at most SHARD_SIZE (the larger shards first); see the module docstring."""

    def __init__(self, connections: int, verify: ssl.SSLContext):
        count = -(-connections // SHARD_SIZE)
        sizes = [connections // count + (index < connections % count) for index in range(count)]
        self.shards = [_pool(size, verify) for size in sizes]
        self.in_flight = [0] * count

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        in_flight = self.in_flight
        index = in_flight.index(min(in_flight))  # of equally busy shards, the first: a larger one
        in_flight[index] += 1
        try:
            response = await self.shards[index].handle_async_request(request)
        except BaseException:
            in_flight[index] -= 1
            raise
        response.stream = _Answer(response.stream, lambda: self._free(index))
        return response

    def _free(self, index: int) -> None:
        self.in_flight[index] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


class _Answer(httpx2.AsyncByteStream):
    """An answer's body, telling `closed` once when it is closed (its connection is back in its pool then)."""

    def __init__(self, body: httpx2.AsyncByteStream | httpx2.SyncByteStream, closed: Callable[[], None]):
        assert isinstance(body, httpx2.AsyncByteStream)
        self.body = body
        self.closed: Callable[[], None] | None = closed

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.body.__aiter__()

    async def aclose(self) -> None:
        try:
            await self.body.aclose()
        finally:
            closed, self.closed = self.closed, None
            if closed is not None:
                closed()


def _pool(size: int, verify: ssl.SSLContext) -> httpx2.AsyncHTTPTransport:
    return httpx2.AsyncHTTPTransport(verify=verify, limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size))
