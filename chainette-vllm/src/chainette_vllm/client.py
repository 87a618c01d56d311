"""The vLLM client: one Request -> one POST /chat/completions with a json_schema response_format -> one Answer.

Transport failures and HTTP error statuses are classified by `chainette.http.JsonHttpClient`, the answer
is read by `chainette.openai_format.parse_chat_completion`; this module builds the payload. A transient
failure first runs `check_server` (given for a server chainette started), which raises EngineError once
that server has exited, so that the run stops instead of retrying a dead server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2

from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import ConfigError, RetryableError, RowError
from chainette.http import JsonHttpClient, bearer
from chainette.media import data_url
from chainette.openai_format import parse_chat_completion, wire_messages
from chainette_vllm.options import API_KEY_ENV, VllmOptions


def request_model(config: EngineConfig[VllmOptions]) -> str:
    """The model name requests give: `served_model_name` when set, else the engine's model."""
    return config.options.served_model_name or config.model


def engine_fields(config: EngineConfig[VllmOptions]) -> dict[str, Any]:
    """The request fields an engine's options add (chat_template_kwargs, include_reasoning), when set."""
    return config.options.model_dump(include={"chat_template_kwargs", "include_reasoning"}, exclude_none=True)


def media_part(field: str, reference: dict[str, Any]) -> dict[str, Any]:
    """The vLLM chat part for a media reference (`vllm/entrypoints/chat_utils.py`: `image_url`, `audio_url`, each
    `{"url": a data URL or an http(s) URL}`); documents are refused at start (`check_input_media`)."""
    if reference["media"] == "document":
        raise RowError(f"field '{field}': vLLM's chat API takes no documents", kind="media")
    part = "image_url" if reference["media"] == "image" else "audio_url"
    return {"type": part, part: {"url": data_url(reference, field=field)}}


def chat_payload(model: str, fields: dict[str, Any], request: Request) -> dict[str, Any]:
    """The chat-completions body for `request`; its sampling comes last so that `extra` can override engine `fields`."""
    return {
        "model": model,
        "messages": wire_messages(request.messages, media_part),
        "response_format": {"type": "json_schema", "json_schema": {"name": request.schema_name, "schema": request.schema}},
        **fields,
        **request.sampling,
    }


class VllmClient:
    """Sends chat requests for one engine; safe to call concurrently (the pool is sized to max_concurrency).

    `config.endpoint` is the server's base URL (what `ensure_running` returned); requests name the
    model by `served_model_name` when set, else by the engine's model.
    """

    def __init__(
        self,
        config: EngineConfig[VllmOptions],
        transport: httpx2.AsyncBaseTransport | None = None,
        check_server: Callable[[], None] | None = None,
    ):
        if not config.endpoint:
            raise ConfigError(f"Engine '{config.name}': the vLLM client needs the server's URL; start the engine through a run.")
        self.engine = config.name
        self.model, self.engine_fields = request_model(config), engine_fields(config)
        headers = bearer(config.resolve_api_key(default_env=API_KEY_ENV))
        self._http = JsonHttpClient(config, config.endpoint, headers=headers, transport=transport)
        self._check_server = check_server

    def payload(self, request: Request) -> dict[str, Any]:
        return chat_payload(self.model, self.engine_fields, request)

    async def complete(self, request: Request) -> Answer:
        try:
            body = await self._http.post("/chat/completions", self.payload(request))
        except RetryableError:
            if self._check_server is not None:
                self._check_server()
            raise
        return parse_chat_completion(body, engine=self.engine)

    async def aclose(self) -> None:
        await self._http.aclose()
