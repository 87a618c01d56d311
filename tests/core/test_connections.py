"""An engine's connections in pools of a few (chainette.connections), against the loopback fake server: as many
requests as connections all go out at once, wave after wave, and a failed request frees its place."""

from __future__ import annotations

import asyncio
import socket

import httpx2
import pytest

from chainette import register_engine
from chainette.connections import SHARD_SIZE, ShardedTransport, pooled_transport
from chainette.http import JsonHttpClient, tls_context
from chainette.testing import FakeServer

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def test_more_connections_than_a_pool_holds_are_split_into_pools_of_about_equal_size():
    assert isinstance(pooled_transport(SHARD_SIZE, tls_context()), httpx2.AsyncHTTPTransport)
    sharded = pooled_transport(2 * SHARD_SIZE + 4, tls_context())
    assert isinstance(sharded, ShardedTransport)
    assert [shard._pool._max_connections for shard in sharded.shards] == [SHARD_SIZE - 1, SHARD_SIZE - 1, SHARD_SIZE - 2]


@pytest.mark.parametrize("connections", [2 * SHARD_SIZE + 4, 3 * SHARD_SIZE])
async def test_as_many_requests_as_connections_all_go_out_at_once_wave_after_wave(connections):
    """A request waiting in a full pool while another has a free connection would keep the server's peak below
    `connections`; the second wave needs every connection the first used to be free again."""
    config = register_engine("e", backend="fake", model="fake-model", max_concurrency=connections)
    with FakeServer(latency=0.3) as server:
        client = JsonHttpClient(config, f"{server.base_url}/v1")
        transport = client._client._transport
        assert isinstance(transport, ShardedTransport)
        for _ in range(2):
            server.max_in_flight = 0
            await asyncio.gather(*(client.post("/chat/completions", CHAT) for _ in range(connections)))
            assert server.max_in_flight == connections
            assert transport.in_flight == [0] * len(transport.shards)
        await client.aclose()


async def test_a_request_that_fails_frees_its_place():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = ShardedTransport(2 * SHARD_SIZE, tls_context())
    async with httpx2.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx2.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
    assert transport.in_flight == [0, 0]
