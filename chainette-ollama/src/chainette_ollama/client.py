"""The Ollama client: a Request becomes one non-streaming `POST /api/chat`, the reply becomes an Answer."""

from __future__ import annotations

from typing import Any

import httpx2

from chainette.client import Answer, Message, Request, Usage
from chainette.engines import EngineConfig
from chainette.errors import CUT_OFF, EngineError, RowError, finish_error
from chainette.http import JsonHttpClient, bearer
from chainette.media import base64_of
from chainette_ollama.options import DEFAULT_URL, OllamaOptions


def wire_messages(messages: list[Message]) -> list[Message]:
    """The messages as /api/chat takes them (Ollama's `api.md`): content a string, and a message's images in its
    `images` list (base64, no data-URL prefix), in the order the prompt places them."""
    if all(type(message["content"]) is str for message in messages):
        return messages
    return [message if type(message["content"]) is str else _with_images(message["content"], message) for message in messages]


def _with_images(parts: list[dict[str, Any]], message: Message) -> Message:
    text = "".join(part["text"] for part in parts if part["type"] == "text")
    images = [_image(part["field"], part["reference"]) for part in parts if part["type"] == "media"]
    return {**message, "content": text, "images": images}


def _image(field: str, reference: dict[str, Any]) -> str:
    if reference["media"] != "image":
        raise RowError(f"field '{field}': Ollama's /api/chat takes images only", kind="media")
    if reference.get("url"):
        raise RowError(
            f"field '{field}': Ollama cannot fetch {reference['url']}: give the image as a file or bytes (chainette does not download)",
            kind="media",
        )
    return base64_of(reference, field=field)


class OllamaClient:
    """Sends chat requests for one engine; failures are classified by JsonHttpClient, a missing model gets a pull hint."""

    def __init__(self, config: EngineConfig[OllamaOptions], transport: httpx2.AsyncBaseTransport | None = None):
        self.engine = config.name
        self.model = config.model
        self.think = config.options.think
        self.keep_alive = config.options.keep_alive
        self.http = JsonHttpClient(config, config.endpoint or DEFAULT_URL, headers=bearer(config.resolve_api_key()), transport=transport)

    def payload(self, request: Request) -> dict[str, Any]:
        """The /api/chat body: streaming off, the schema as `format`, sampling as `options`."""
        body: dict[str, Any] = {"model": self.model, "messages": wire_messages(request.messages), "stream": False, "format": request.schema}
        if request.sampling:
            body["options"] = request.sampling
        if self.think is not None:
            body["think"] = self.think
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    async def complete(self, request: Request) -> Answer:
        try:
            body = await self.http.post("/api/chat", self.payload(request))
        except EngineError as exc:
            if exc.kind != "not_found":
                raise
            hint = f" If the model is not downloaded yet, run `ollama pull {self.model}` on the Ollama host."
            raise EngineError(f"{exc}{hint}", kind=exc.kind) from None
        return parse_answer(body, engine=self.engine)

    async def aclose(self) -> None:
        await self.http.aclose()


def parse_answer(body: dict[str, Any], *, engine: str) -> Answer:
    """The Answer in an /api/chat reply: content, thinking as reasoning, token counts (0 when absent; carried by its RowErrors)."""
    usage = Usage(input_tokens=body.get("prompt_eval_count") or 0, output_tokens=body.get("eval_count") or 0)
    message = body.get("message")
    message = message if isinstance(message, dict) else {}
    text = message.get("content")
    if not isinstance(text, str):
        raise RowError(f"engine '{engine}': the reply has no message content", kind="bad_response", raw=str(body)[:2000], usage=usage)
    error = finish_error(body.get("done_reason"), engine=engine, text=text, usage=usage)
    if error is not None:
        raise error
    reason = body.get("done_reason")
    return Answer(text=text, reasoning=message.get("thinking") or None, usage=usage, cut_off=reason in CUT_OFF)
