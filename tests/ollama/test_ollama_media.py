"""The ollama backend sends images in the message's `images` list (Ollama's `docs/api.md`, `/api/chat`: "images
(optional): a list of images to include in the message", base64 without a data-URL prefix), over real HTTP to the
loopback FakeServer; documents and audio are refused at start, an image URL per row (chainette does not download)."""

from __future__ import annotations

import base64
import json

from pydantic import BaseModel
import pytest

from chainette import Audio, Chain, ConfigError, Image, Step, register_engine
from chainette.testing import FakeServer

MODEL = "llava:7b"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


@pytest.fixture(autouse=True)
def media_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))


class Pair(BaseModel):
    pages: list[Image]
    memo: Audio | None = None


class Summary(BaseModel):
    text: str


def test_images_go_in_the_messages_images_list_in_order(tmp_path):
    rows = [{"pages": [PNG, GIF]}, {"pages": ["https://example.org/a.png"]}]
    with FakeServer(models=(MODEL,)) as server:
        register_engine("local", backend="ollama", model=MODEL, endpoint=server.base_url)
        step = Step(id="read", input_model=Pair, output_model=Summary, engine_name="local", user_prompt="Compare {{pages}} please")
        result = Chain(name="c", steps=[step]).run(rows, output_dir=tmp_path / "out")
        bodies = list(server.requests)
    assert len(result["read"]) == 1
    sent = [request["body"]["messages"][-1] for request in bodies if request["body"].get("messages")]
    assert sent == [
        {"role": "user", "content": "Compare  please", "images": [base64.b64encode(PNG).decode(), base64.b64encode(GIF).decode()]}
    ]
    error = json.loads((tmp_path / "out" / "errors.jsonl").read_text().splitlines()[0])
    assert error["error_type"] == "media" and "field 'pages[0]': Ollama cannot fetch https://example.org/a.png" in error["message"]


def test_audio_is_refused_at_start_naming_step_and_field(tmp_path):
    register_engine("local", backend="ollama", model=MODEL, endpoint="http://127.0.0.1:9")
    step = Step(id="hear", input_model=Pair, output_model=Summary, engine_name="local", user_prompt="{{memo}}")
    with pytest.raises(ConfigError, match=r"Step 'hear': field 'memo' is an audio, which engine 'local' cannot take: Ollama's /api/chat"):
        Chain(name="c", steps=[step]).run([{"pages": [PNG]}], output_dir=tmp_path / "out")
