"""One engine over two vLLM replicas: both serve, and when one goes away the other finishes the run."""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel

from chainette import Chain, Step, register_engine
import chainette.balancer
import chainette.policy
from chainette.testing import FakeServer

from .conftest import echo


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def stop_after(server: FakeServer, requests: int) -> None:
    """Stop `server` once it has been sent `requests` chat requests (or after a minute)."""
    deadline = time.monotonic() + 60
    while len(server.chat_requests()) < requests and time.monotonic() < deadline:
        time.sleep(0.005)
    server.stop()


def test_two_replicas_and_one_dies(tmp_path, monkeypatch):
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.01)
    monkeypatch.setattr(chainette.balancer, "SET_ASIDE_SECONDS", 30.0)
    with FakeServer(respond=echo, latency=0.005) as first, FakeServer(respond=echo, latency=0.005) as second:
        urls = [f"{first.base_url}/v1", f"{second.base_url}/v1"]
        register_engine("llm", backend="vllm", model="fake-model", endpoint=urls, max_concurrency=16, timeout=5.0)
        step = Step(id="s", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")
        stopper = threading.Thread(target=stop_after, args=(second, 1))  # once the run is under way, however slowly it started
        stopper.start()
        result = Chain(name="c", steps=[step]).run([{"text": f"row{i}"} for i in range(1500)], output_dir=tmp_path / "out")
        stopper.join()
        served = (len(first.chat_requests()), len(second.chat_requests()))
    assert [r.label for r in result["s"]] == [f"row{i}" for i in range(1500)]
    assert not result.errors
    assert served[1] > 0 and served[0] > served[1], f"both replicas served, the survivor most: {served}"
