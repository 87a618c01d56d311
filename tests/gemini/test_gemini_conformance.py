"""The `gemini` backend keeps the backend contract, against a loopback stand-in for the Gemini API."""

from collections.abc import Iterator
from typing import Any

import pytest

from chainette.testing import FakeServer
from chainette.testing.conformance import BackendConformance

pytest.importorskip("google.genai")


class TestGeminiBackend(BackendConformance):
    backend = "gemini"
    wire_format = "gemini"
    chat_path = "/v1beta/models/fake-model:generateContent"

    @pytest.fixture
    def server(self, gemini_server: FakeServer) -> Iterator[FakeServer]:
        yield gemini_server

    def engine_options(self, server: FakeServer | None) -> dict[str, Any]:
        return {"endpoint": server.base_url if server is not None else None, "api_key": "conformance-key"}
