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


def test_fake_answers_stay_what_they_were_for_the_same_model_and_prompt():
    """Users' own tests compare fake answers run to run: the words, numbers (a schema's bounds kept, three decimals),
    integers and booleans each request draws stay the same from one version to the next."""
    from chainette import register_engine
    from chainette.backends.fake import FakeClient
    from chainette.client import Request

    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "score": {"type": "number"},
            "price": {"type": "number", "minimum": 2.5, "maximum": 7},
            "count": {"type": "integer", "minimum": 1, "maximum": 9},
            "ok": {"type": "boolean"},
        },
    }
    client = FakeClient(register_engine("pinned", backend="fake", model="pinned-model"))
    messages = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "Classify row 4"}]
    answer = client.complete(Request(messages, schema, "Pinned"))
    try:
        answer.send(None)
    except StopIteration as done:
        assert done.value.text == PINNED
    else:
        raise AssertionError("the fake backend waited on the loop with no latency")


PINNED = '{"label":"label bravo alpha","score":0.216,"price":3.809,"count":4,"ok":true}'
