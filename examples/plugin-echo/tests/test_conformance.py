"""chainette-echo keeps the backend contract: `pip install chainette-echo[test]`, then `pytest`."""

from chainette.testing.conformance import BackendConformance


class TestEchoBackend(BackendConformance):
    backend = "echo"
    model = "echo-1"
    wire_format = None  # echo answers in-process: there is no HTTP server to fake
