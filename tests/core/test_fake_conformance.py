"""The built-in `fake` backend keeps the backend contract (it has no server: the wire checks are skipped)."""

from chainette.testing.conformance import BackendConformance


class TestFakeBackend(BackendConformance):
    backend = "fake"
    wire_format = None
