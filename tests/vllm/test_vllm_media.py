"""The vllm backend sends media as the OpenAI-style parts vLLM's chat API parses (`vllm/entrypoints/chat_utils.py`:
`image_url` and `audio_url`, each `{"url": ...}` with a data URL or an http(s) URL; no document part), over real HTTP to
the loopback FakeServer, and refuses documents at start."""

from __future__ import annotations

import base64
import json

from pydantic import BaseModel
import pytest

from chainette import Audio, Chain, ConfigError, Document, Image, Step, register_engine
from chainette.testing import FakeServer

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(32)


@pytest.fixture(autouse=True)
def media_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))


class Visit(BaseModel):
    photo: Image
    note: Audio
    scan: Document | None = None


class Summary(BaseModel):
    text: str


def test_images_and_audio_go_as_image_url_and_audio_url_parts(tmp_path):
    rows = [{"photo": PNG, "note": MP3}, {"photo": "https://example.org/x.png", "note": MP3}]
    with FakeServer() as server:
        register_engine("gpu", backend="vllm_api", model="fake-model", endpoint=f"{server.base_url}/v1")
        step = Step(id="look", input_model=Visit, output_model=Summary, engine_name="gpu", user_prompt="See {{photo}}, hear {{note}}.")
        result = Chain(name="c", steps=[step]).run(rows, output_dir=tmp_path / "out")
        bodies = sorted(server.chat_requests(), key=lambda body: str(body["messages"][-1]["content"][1]))
    assert len(result["look"]) == 2
    audio = {"type": "audio_url", "audio_url": {"url": "data:audio/mpeg;base64," + base64.b64encode(MP3).decode()}}
    contents = [body["messages"][-1]["content"] for body in bodies]
    assert {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}} in [
        c[1] for c in contents
    ]
    assert {"type": "image_url", "image_url": {"url": "https://example.org/x.png"}} in [c[1] for c in contents]
    assert all(content[0] == {"type": "text", "text": "See "} and content[3] == audio and content[4]["text"] == "." for content in contents)


def test_a_placed_document_is_refused_at_start_naming_step_and_field(tmp_path):
    register_engine("gpu", backend="vllm_api", model="fake-model", endpoint="http://127.0.0.1:9/v1")
    step = Step(id="look", input_model=Visit, output_model=Summary, engine_name="gpu", user_prompt="{{photo}} {{scan}}")
    with pytest.raises(ConfigError, match=r"Step 'look': field 'scan' is a document, which engine 'gpu' cannot take: vLLM's chat API"):
        Chain(name="c", steps=[step]).run([{"photo": PNG, "note": MP3}], output_dir=tmp_path / "out")


class Note(BaseModel):
    note: str
    photo: Image


def test_an_image_changed_between_a_kill_and_the_resume_fails_its_rows_instead_of_answering_for_it(tmp_path):
    """The rows a killed run had read keep the sha256 of their image; building their request after the file changed
    is a row error of kind media, naming the field (rows answered before the kill keep their reference)."""
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "rows.jsonl").write_text('{"note": "n", "photo": "a.png"}\n')
    first = Step(id="first", input_model=Note, output_model=Summary, engine_name="gpu", user_prompt="{{note}}")
    look = Step(id="look", output_model=Summary, engine_name="gpu", user_prompt="Look: {{chain_input.photo}}")
    out = tmp_path / "out"
    with FakeServer() as server:
        register_engine("gpu", backend="vllm_api", model="fake-model", endpoint=f"{server.base_url}/v1")
        Chain(name="c", steps=[first, look]).run(str(tmp_path / "rows.jsonl"), output_dir=out, cache=False)
        for leftover in (out / ".chainette" / "look.done", out / ".chainette" / "look.jsonl", out / "look" / "000.jsonl", out / "run.json"):
            leftover.unlink()  # killed before 'look' committed anything
        (tmp_path / "a.png").write_bytes(PNG + b"edited")
        asked = len(server.chat_requests())
        result = Chain(name="c", steps=[first, look]).run(str(tmp_path / "rows.jsonl"), output_dir=out, cache=False)
        assert len(server.chat_requests()) == asked, "nothing was sent for the changed image"
    assert result["look"] == []
    [error] = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert error["step_id"] == "look" and error["error_type"] == "media"
    assert f"field 'chain_input.photo': {tmp_path / 'a.png'} changed since the row was read" in error["message"]
