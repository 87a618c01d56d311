"""Conformance checks of failures: each kind of server failure becomes the error class the core's retry policy
expects (retryable, row error, engine error), and the client never retries by itself."""

from __future__ import annotations

import asyncio

import pytest

from chainette.client import Answer
from chainette.errors import EngineError, RetryableError, RowError
from chainette.testing.conformance.harness import NO_SERVER, Harness, Text, request, run
from chainette.testing.server import FakeServer, Fault


class FailureChecks(Harness):
    def test_transient_statuses_are_retryable(self, server: FakeServer | None) -> None:
        """429 (its Retry-After kept as retry_after), 500 and 503 raise RetryableError; the client does not retry by itself."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(status=429, retry_after=7), Fault(status=500), Fault(status=503))
        outcomes = run(self.failures(self.register(server), 3))
        for status, outcome in zip((429, 500, 503), outcomes, strict=True):
            assert isinstance(outcome, RetryableError), f"HTTP {status} gave {outcome!r}, not a RetryableError"
            if status == 429:
                assert outcome.retry_after == 7, f"Retry-After: 7 gave retry_after={outcome.retry_after!r}"
        assert len(server.chat_requests()) == 3, "the client retried by itself; leave retries to the core"

    def test_bad_request_is_a_row_error(self, server: FakeServer | None) -> None:
        """HTTP 400 raises RowError: that row fails, the run goes on."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(status=400))
        [outcome] = run(self.failures(self.register(server), 1))
        assert isinstance(outcome, RowError), f"HTTP 400 gave {outcome!r}, not a RowError"

    def test_authentication_failure_is_an_engine_error(self, server: FakeServer | None) -> None:
        """HTTP 401 raises EngineError: no row can succeed, the run stops."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(status=401))
        [outcome] = run(self.failures(self.register(server), 1))
        assert isinstance(outcome, EngineError), f"HTTP 401 gave {outcome!r}, not an EngineError"

    def test_refused_connection_is_retryable(self) -> None:
        """A server that went away (connection refused) raises RetryableError with kind "connection"."""
        if self.wire_format is None:
            pytest.skip(NO_SERVER)

        async def check() -> BaseException | Answer:
            with self.server_class(models=(self.model,)) as doomed:
                async with self.open_client(self.register(doomed)) as client:
                    await asyncio.to_thread(doomed.stop)
                    try:
                        return await client.complete(request(Text, "anyone there?"))
                    except Exception as exc:
                        return exc

        outcome = run(check())
        assert isinstance(outcome, RetryableError), f"a refused connection gave {outcome!r}, not a RetryableError"
        assert outcome.kind == "connection", f"a refused connection has kind {outcome.kind!r}; the core needs 'connection'"

    def test_timeout_is_retryable(self, server: FakeServer | None) -> None:
        """A request that outlasts the engine's `timeout` option raises RetryableError."""
        if server is None:
            pytest.skip(NO_SERVER)
        server.fail_next(Fault(hang=0.6, status=400))  # a client that waits it out gets a RowError
        [outcome] = run(self.failures(self.register(server, timeout=0.1), 1))
        assert isinstance(outcome, RetryableError), f"a request past the timeout gave {outcome!r}, not a RetryableError"
