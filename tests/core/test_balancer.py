"""Several endpoints for one engine: least outstanding requests first, a failing endpoint set aside."""

from __future__ import annotations

import asyncio
from collections import Counter
import json

import pytest

from chainette import Answer, Chain, RetryableError, Step, hookimpl, register_engine
import chainette.balancer
from chainette.plugins import get_plugins
import chainette.policy

from .conftest import Label, Text


class Replicas:
    """A backend whose clients answer per endpoint; endpoints listed in `down` refuse connections."""

    def __init__(self, down: set[str]):
        self.down = down
        self.calls: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.outstanding: Counter[str] = Counter()

    @hookimpl
    def make_client(self, config):
        replicas, url = self, config.endpoint

        class Client:
            async def complete(self, request):
                replicas.calls[url] += 1
                if url in replicas.down:
                    raise RetryableError(f"cannot connect to {url}", kind="connection")
                replicas.outstanding[url] += 1
                replicas.peak[url] = max(replicas.peak[url], replicas.outstanding[url])
                await asyncio.sleep(0.001)
                replicas.outstanding[url] -= 1
                return Answer(json.dumps({"label": request.row_id}))

            async def aclose(self):
                pass

        return Client()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.001)


def run(tmp_path, replicas: Replicas, urls: list[str], rows: int = 200):
    get_plugins().register("replicas", replicas)
    register_engine("r", backend="replicas", model="m", endpoint=urls, max_concurrency=16)
    step = Step(id="s", input_model=Text, output_model=Label, engine_name="r", user_prompt="{{text}}")
    return Chain(name="c", steps=[step]).run([{"text": str(i)} for i in range(rows)], output_dir=tmp_path / "out")


def test_requests_spread_over_replicas(tmp_path):
    replicas = Replicas(down=set())
    result = run(tmp_path, replicas, ["http://a", "http://b", "http://c"])
    assert [r.label for r in result["s"]] == [str(i) for i in range(200)]
    assert set(replicas.calls) == {"http://a", "http://b", "http://c"}
    assert max(replicas.peak.values()) <= 6, "16 in flight over 3 replicas: no replica takes more than its share"
    assert json.loads((tmp_path / "out" / "graph.json").read_text())["engines"]["r"]["endpoint"] == ["http://a", "http://b", "http://c"]


def test_a_replica_that_fails_is_set_aside(tmp_path, monkeypatch):
    monkeypatch.setattr(chainette.balancer, "SET_ASIDE_SECONDS", 60.0)
    replicas = Replicas(down={"http://b"})
    result = run(tmp_path, replicas, ["http://a", "http://b"])
    assert len(result["s"]) == 200 and not result.errors
    assert replicas.calls["http://b"] <= 16, "after failing, b gets nothing more during its cool-down"
    assert replicas.calls["http://a"] >= 200


def test_a_set_aside_replica_is_tried_again_later(tmp_path, monkeypatch):
    monkeypatch.setattr(chainette.balancer, "SET_ASIDE_SECONDS", 0.001)
    monkeypatch.setattr(chainette.balancer, "MAX_SET_ASIDE_SECONDS", 0.001)
    replicas = Replicas(down={"http://b"})
    original = replicas.make_client

    def recovering(config):
        client = original(config)
        complete = client.complete

        async def complete_then_recover(request):
            if replicas.calls["http://b"] >= 3:
                replicas.down.clear()
            return await complete(request)

        client.complete = complete_then_recover
        return client

    replicas.make_client = hookimpl(recovering)
    result = run(tmp_path, replicas, ["http://a", "http://b"], rows=300)
    assert len(result["s"]) == 300 and not result.errors
    assert replicas.peak["http://b"] > 0, "b answered again once it was back"


def test_the_engine_is_unreachable_only_when_every_replica_is(tmp_path):
    from chainette import EngineError

    replicas = Replicas(down={"http://a", "http://b"})
    with pytest.raises(EngineError, match="cannot connect"):
        run(tmp_path, replicas, ["http://a", "http://b"], rows=5)
