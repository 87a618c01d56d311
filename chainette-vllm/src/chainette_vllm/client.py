"""The vLLM client: one Request -> one POST /chat/completions with a json_schema response_format -> one Answer.

Transport failures and HTTP error statuses are classified by `chainette.http.JsonHttpClient`;
this module builds the payload and reads the answer.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import ConfigError, RowError, finish_error
from chainette.http import JsonHttpClient
from chainette.openai_format import parse_usage
from chainette_vllm import API_KEY_ENV


class VllmClient:
    """Sends chat requests for one engine; safe to call concurrently (the pool is sized to max_concurrency).

    `config.endpoint` is the server's base URL (what `ensure_running` returned); requests name the
    model by `served_model_name` when set, else by the engine's model.
    """

    def __init__(self, config: EngineConfig, transport: httpx2.AsyncBaseTransport | None = None):
        if not config.endpoint:
            raise ConfigError(f"Engine '{config.name}': the vLLM client needs the server's URL; start the engine through a run.")
        self.engine = config.name
        self.model = config.options.served_model_name or config.model
        self.engine_fields = config.options.model_dump(include={"chat_template_kwargs", "include_reasoning"}, exclude_none=True)
        key = config.resolve_api_key(default_env=API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self._http = JsonHttpClient(config, config.endpoint, headers=headers, transport=transport)

    def payload(self, request: Request) -> dict[str, Any]:
        """The JSON body for `request`; the request's sampling comes last so that `extra` can override engine fields."""
        return {
            "model": self.model,
            "messages": request.messages,
            "response_format": {"type": "json_schema", "json_schema": {"name": request.schema_name, "schema": request.schema}},
            **self.engine_fields,
            **request.sampling,
        }

    async def complete(self, request: Request) -> Answer:
        body = await self._http.post("/chat/completions", self.payload(request))
        return parse_answer(body, engine=self.engine)

    async def aclose(self) -> None:
        await self._http.aclose()


def parse_answer(body: dict[str, Any], *, engine: str) -> Answer:
    """The Answer in a chat-completion body; RowError (carrying the body's usage) for a truncated answer or one without content."""
    usage = parse_usage(body.get("usage"))
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise RowError(f"engine '{engine}': the answer has no choices[0].message", kind="bad_response", raw=_raw(body), usage=usage)
    text = message.get("content")
    error = finish_error(choice.get("finish_reason"), engine=engine, text=text, usage=usage)
    if error is not None:
        raise error
    if not isinstance(text, str):
        raise RowError(f"engine '{engine}': the answer has no message content", kind="bad_response", raw=_raw(body), usage=usage)
    return Answer(text=text, reasoning=message.get("reasoning") or message.get("reasoning_content") or None, usage=usage)


def _raw(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)[:2000]
