"""The `vllm` backend keeps the backend contract, on an engine with an endpoint (the loopback FakeServer's /v1 API)."""

from chainette.testing.conformance import BackendConformance


class TestVllmBackend(BackendConformance):
    backend = "vllm"
    wire_format = "openai"
