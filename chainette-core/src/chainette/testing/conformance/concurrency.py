"""Conformance checks of a client under concurrency: concurrent calls keep their own answers, a cancelled call
leaves the client usable, and aclose() leaves nothing open."""

from __future__ import annotations

import asyncio
from contextlib import suppress
import gc
import json
import warnings

import pytest

from chainette.client import Answer
from chainette.testing.conformance.harness import CONCURRENT, Harness, Text, last_user_message, request, run
from chainette.testing.server import FakeServer, Fault


class ConcurrencyChecks(Harness):
    def test_concurrent_calls_get_their_own_answers(self, server: FakeServer | None) -> None:
        """Many concurrent complete() calls on one client each return the answer to their own request."""
        requests = [request(Text, f"marker-{index}") for index in range(CONCURRENT)]
        if server is not None:
            server.latency = 0.01
            server.respond = lambda body: json.dumps({"text": last_user_message(body).split()[-1]})

        async def answers() -> tuple[list[Answer], list[Answer]]:
            async with self.open_client(self.register(server)) as client:
                together = await asyncio.gather(*(client.complete(r) for r in requests))
                one_by_one = [await client.complete(r) for r in requests] if server is None and self.deterministic else []
                return list(together), one_by_one

        together, one_by_one = run(answers())
        assert len(together) == CONCURRENT and all(isinstance(a, Answer) for a in together)
        if server is not None:
            got = [Text.model_validate_json(a.text).text for a in together]
            assert got == [f"marker-{index}" for index in range(CONCURRENT)], f"answers are misaligned: {got}"
        elif one_by_one:
            assert [a.text for a in together] == [a.text for a in one_by_one], "concurrent answers differ from sequential ones"

    def test_cancellation_leaves_the_client_usable(self, server: FakeServer | None) -> None:
        """Cancelling a task awaiting complete() ends it promptly (no hang), and the client answers the next request."""

        async def check() -> Answer:
            async with self.open_client(self.register(server)) as client:
                if server is not None:
                    server.fail_next(Fault(hang=0.5, status=400))
                task = asyncio.ensure_future(client.complete(request(Text, "to be cancelled")))
                if server is not None:
                    while server.in_flight == 0 and not task.done():
                        await asyncio.sleep(0.01)
                else:
                    await asyncio.sleep(0)
                task.cancel()
                if server is not None:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    with suppress(asyncio.CancelledError):
                        await task
                return await client.complete(request(Text, "after the cancellation"))

        answer = run(check())
        Text.model_validate_json(answer.text)

    def test_aclose_releases_everything(self, server: FakeServer | None) -> None:
        """aclose() after some requests succeeds and leaves nothing open: no ResourceWarning once the client is gone."""
        config = self.register(server)
        gc.collect()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(self.complete(config, request(Text, "close me")))
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaks, f"resources left open after aclose(): {leaks}"
