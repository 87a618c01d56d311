"""The built-in `fake` backend keeps the backend contract (it has no server: the wire checks are skipped)."""

from chainette.testing.conformance import BackendConformance


class TestFakeBackend(BackendConformance):
    backend = "fake"
    wire_format = None


async def test_fake_without_latency_answers_at_once():
    """With no latency the fake backend answers without waiting on the event loop (its own cost is not counted as
    chainette's in the per-row benchmark); with some, it waits."""
    from chainette import register_engine
    from chainette.backends.fake import FakeClient
    from chainette.client import Request

    request = Request([{"role": "user", "content": "hi"}], {"type": "object", "properties": {"a": {"type": "integer"}}}, "x")
    at_once = FakeClient(register_engine("f0", backend="fake", model="m")).complete(request)
    try:
        at_once.send(None)
    except StopIteration as done:
        assert isinstance(done.value.text, str)
    else:
        raise AssertionError("the fake backend waited on the loop with no latency")
    waiting = FakeClient(register_engine("f1", backend="fake", model="m", latency=0.01)).complete(request)
    assert waiting.send(None) is not None  # suspended on the sleep
    waiting.close()
