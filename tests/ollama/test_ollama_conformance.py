"""The `ollama` backend keeps the backend contract, against the loopback FakeServer's /api endpoints."""

from chainette.testing.conformance import BackendConformance


class TestOllamaBackend(BackendConformance):
    backend = "ollama"
    model = "llama3.2"
    wire_format = "ollama"
