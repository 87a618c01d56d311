"""The openai backend sends media natively, over real HTTP to the loopback FakeServer: Chat Completions parts, Responses
parts, batch lines (and batch files split by their real size), and the start check refusing what an API cannot take.

The part shapes are those of the OpenAI API reference as the openai SDK 3.63 types it: Chat Completions
`ChatCompletionContentPartImageParam` (`{"type": "image_url", "image_url": {"url"}}`, a URL or a base64 data URL),
`ChatCompletionContentPartInputAudioParam` (`{"type": "input_audio", "input_audio": {"data": base64, "format": "wav" |
"mp3"}}`) and `File` (`{"type": "file", "file": {"filename", "file_data"}}`); Responses `ResponseInputContent` is
`input_text`, `input_image` (`image_url`, `detail` required) or `input_file` (`filename` + `file_data`, or `file_url`),
with no audio part.
"""

from __future__ import annotations

import base64
import json

from pydantic import BaseModel
import pytest

from chainette import Audio, Chain, ConfigError, Document, Image, Step, register_engine
from chainette.client import Request
from chainette.errors import RowError
from chainette.testing import FakeServer
import chainette_openai.batch
from chainette_openai.client import OpenAIClient

KEY = "sk-test-MEDIA-1a2b3c"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"


@pytest.fixture(autouse=True)
def media_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))


class Claim(BaseModel):
    photo: Image
    scan: Document
    call: Audio


class Total(BaseModel):
    total: float


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def claim_row(tmp_path) -> dict:
    (tmp_path / "claim.pdf").write_bytes(PDF)
    return {"photo": PNG, "scan": str(tmp_path / "claim.pdf"), "call": WAV}


def request_for(prompt: str, row: dict) -> Request:
    from chainette.execution.prompts import Prompts
    from chainette.frontier import Row

    data = Claim.model_validate(row).model_dump(mode="json")
    step = Step(id="read", input_model=Claim, output_model=Total, engine_name="llm", user_prompt=prompt)
    messages = Prompts.of(step).messages(Row("0", {"chain_input": data}, "chain_input"))
    return Request(messages, Total.model_json_schema(), "Total", output_model=Total)


def client(server: FakeServer, **options) -> OpenAIClient:
    return OpenAIClient(
        register_engine("llm", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, **options)
    )


async def test_chat_completions_parts_for_an_image_a_pdf_and_audio(tmp_path):
    request = request_for("Photo {{photo}} scan {{scan}} call {{call}}", claim_row(tmp_path))
    with FakeServer(api_key=KEY) as server:
        sender = client(server)
        await sender.complete(request)
        await sender.aclose()
    user = server.requests[0]["body"]["messages"][-1]
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Photo "},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
            {"type": "text", "text": " scan "},
            {"type": "file", "file": {"filename": "claim.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"}},
            {"type": "text", "text": " call "},
            {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}},
        ],
    }
    assert server.requests[0]["body"]["messages"][0]["role"] == "system", "the system prompt stays a plain string"
    assert isinstance(server.requests[0]["body"]["messages"][0]["content"], str)


async def test_chat_completions_pass_an_image_url_on_and_refuse_a_document_url(tmp_path):
    row = {**claim_row(tmp_path), "photo": "https://example.org/r.jpg", "scan": "https://example.org/c.pdf"}
    with FakeServer(api_key=KEY) as server:
        sender = client(server)
        await sender.complete(request_for("{{photo}}", row))
        with pytest.raises(RowError, match="field 'scan': Chat Completions takes a document's bytes, not its URL"):
            await sender.complete(request_for("{{scan}}", row))
        await sender.aclose()
    assert server.requests[0]["body"]["messages"][-1]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.org/r.jpg"}}
    ]
    assert len(server.requests) == 1


async def test_responses_parts_for_an_image_and_a_pdf(tmp_path):
    request = request_for("Photo {{photo}} scan {{scan}}", claim_row(tmp_path))
    with FakeServer(api_key=KEY) as server:
        sender = client(server, api="responses")
        await sender.complete(request)
        await sender.aclose()
    user = server.requests[0]["body"]["input"][-1]
    assert user["content"] == [
        {"type": "input_text", "text": "Photo "},
        {"type": "input_image", "image_url": f"data:image/png;base64,{b64(PNG)}", "detail": "auto"},
        {"type": "input_text", "text": " scan "},
        {"type": "input_file", "filename": "claim.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"},
    ]


def test_the_start_check_refuses_audio_on_the_responses_api_naming_step_and_field(tmp_path):
    register_engine("llm", backend="openai", model="fake-model", endpoint="http://127.0.0.1:9/v1", api_key=KEY, api="responses")
    chain = Chain(name="c", steps=[Step(id="listen", input_model=Claim, output_model=Total, engine_name="llm", user_prompt="{{call}}")])
    with pytest.raises(ConfigError, match=r"Step 'listen': field 'call' is an audio, which engine 'llm' cannot take: the Responses API"):
        chain.run([claim_row(tmp_path)], output_dir=tmp_path / "out")


def test_batch_lines_carry_the_media_and_files_split_by_their_real_size(tmp_path, monkeypatch):
    """Each line holds its image's base64, and a batch file closes before its bytes pass the limit."""
    image = PNG + bytes(30_000)
    rows = [{**claim_row(tmp_path), "photo": image + bytes([index])} for index in range(4)]
    monkeypatch.setattr(chainette_openai.batch.OpenAIBatchClient, "max_bytes", 100_000)
    with FakeServer(api_key=KEY) as server:
        register_engine(
            "llm", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, batch=True, batch_poll_seconds=0.01
        )
        step = Step(id="read", input_model=Claim, output_model=Total, engine_name="llm", user_prompt="Read {{photo}}")
        result = Chain(name="c", steps=[step]).run(rows, output_dir=tmp_path / "out")
        files = list(server.batches.files.values())
    assert len(result["read"]) == 4
    uploads = [file for file in files if b'"custom_id"' in file and b'"method"' in file]
    lines = [json.loads(line) for upload in uploads for line in upload.splitlines()]
    assert len(uploads) >= 2 and all(len(upload) <= 100_000 for upload in uploads)
    urls = sorted(line["body"]["messages"][-1]["content"][1]["image_url"]["url"] for line in lines)
    assert urls == sorted(f"data:image/png;base64,{b64(image + bytes([index]))}" for index in range(4))
