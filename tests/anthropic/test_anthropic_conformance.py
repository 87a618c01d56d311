"""The `anthropic` backend keeps the backend contract, against the loopback stand-in for the Messages API."""

from typing import Any

import pytest

pytest.importorskip("anthropic")

from chainette.testing.conformance import BackendConformance
from chainette.testing.server import FakeServer
from chainette_anthropic.testing import FakeAnthropic


class TestAnthropicBackend(BackendConformance):
    backend = "anthropic"
    wire_format = "anthropic"
    chat_path = "/v1/messages"
    server_class = FakeAnthropic

    def engine_options(self, server: FakeServer | None) -> dict[str, Any]:
        return {**super().engine_options(server), "api_key": "sk-ant-conformance"}
