"""The `openai` backend keeps the backend contract, against the loopback FakeServer's /v1 API."""

from chainette.testing.conformance import BackendConformance


class TestOpenAIBackend(BackendConformance):
    backend = "openai"
    wire_format = "openai"


def test_the_chain_check_reaches_the_server_whatever_the_cache_holds(fake_server, tmp_path):
    """The conformance suite runs in backend authors' own environments, with their response cache: a second run
    of its chain check must still send every row to the server."""
    checks = TestOpenAIBackend()
    for attempt in range(2):
        fake_server.requests.clear()
        checks.test_structured_output_through_a_chain(fake_server, tmp_path / str(attempt))
