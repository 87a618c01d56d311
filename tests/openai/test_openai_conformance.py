"""The `openai` backend keeps the backend contract, against the loopback FakeServer's /v1 API."""

from chainette.testing.conformance import BackendConformance


class TestOpenAIBackend(BackendConformance):
    backend = "openai"
    wire_format = "openai"
