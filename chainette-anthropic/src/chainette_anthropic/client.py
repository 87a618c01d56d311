"""The anthropic backend's client: a Request becomes one Messages API call (`messages.create`), its schema asked for as
the engine's `structured_output` says: JSON outputs (`output_config.format`) or a forced tool.

The SDK's own retries are off (the core retries), every SDK failure becomes a chainette BackendError whose message
and raw text never contain the API key, and the answer is read by `chainette_anthropic.wire.parse_message`.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import anthropic
from anthropic.resources.messages import AsyncMessages
import httpx2

from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import BackendError, EngineError, RetryableError, error_code, error_for_status, missing_key, parse_retry_after
from chainette.http import async_client, error_message
from chainette.secrets import public_url
from chainette_anthropic.caching import PromptCache
from chainette_anthropic.options import DEFAULT_KEY_ENV, AnthropicOptions
from chainette_anthropic.schema import json_output_schema
from chainette_anthropic.wire import parse_message, system_blocks, turns

CREATE_FIELDS = frozenset(inspect.signature(AsyncMessages.create).parameters) - {
    "self",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}
NO_CREDIT = "credit balance is too low"  # Anthropic's 400 for an account without credit: no row can succeed


class AnthropicClient:
    """Sends requests for one engine to the Messages API; `transport` replaces the network (tests)."""

    def __init__(self, config: EngineConfig[AnthropicOptions], transport: httpx2.AsyncBaseTransport | None = None):
        self.engine = config.name
        self.model = config.model
        self.options = config.options
        self._key = config.resolve_api_key(default_env=DEFAULT_KEY_ENV)
        if not self._key:
            raise missing_key(self.engine, "Anthropic", DEFAULT_KEY_ENV)
        http_client = async_client(config.options, transport=transport)
        self._client = anthropic.AsyncAnthropic(
            api_key=self._key, base_url=config.endpoint, max_retries=0, timeout=http_client.timeout, http_client=http_client
        )
        self._cache = PromptCache(self.model) if config.options.prompt_cache else None
        self._formats: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    async def complete(self, request: Request) -> Answer:
        kwargs, extra_body = self.arguments(request)
        try:
            reply = await self._client.messages.create(**kwargs, extra_body=extra_body or None)
        except anthropic.APIError as exc:
            raise self.classify(exc) from None
        return self.read(reply.to_dict(warnings=False))

    def read(self, body: Any) -> Answer:
        """The Answer in a decoded Message (`parse_message`); an error's raw text without the key."""
        try:
            return parse_message(body, engine=self.engine)
        except BackendError as exc:
            if exc.raw:
                exc.raw = self.scrub(exc.raw)
            raise

    def arguments(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """The SDK call's arguments for `request`, and the fields the SDK does not know (its extra_body)."""
        wanted = self._format(request)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.options.max_tokens,
            "messages": turns(request.messages),
            **wanted,
        }
        system = system_blocks(request.messages)
        if self._cache is not None:
            self._cache.mark(json.dumps(wanted["tools"]) if "tools" in wanted else "", system)
        if system:
            kwargs["system"] = system
        if self.options.thinking_budget is not None:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": self.options.thinking_budget}
        extra_body = {}
        for key, value in request.sampling.items():
            if key in CREATE_FIELDS:
                kwargs[key] = value
            else:
                extra_body[key] = value
        return kwargs, extra_body

    def _format(self, request: Request) -> dict[str, Any]:
        """The arguments that ask for the request's schema, made once per schema object (kept alive, so that its id
        stays unique): JSON outputs with the SDK's transform of the output model (of the bare schema without one), or
        one tool taking the schema as its input, its use forced."""
        cached = self._formats.get(id(request.schema))
        if cached is None or cached[0] is not request.schema:
            if self.options.structured_output == "tool":
                tool = {"name": request.schema_name, "description": "Give the answer.", "input_schema": request.schema}
                wanted: dict[str, Any] = {"tools": [tool], "tool_choice": {"type": "tool", "name": request.schema_name}}
            else:
                wanted = {"output_config": {"format": {"type": "json_schema", "schema": json_output_schema(request)}}}
            cached = self._formats[id(request.schema)] = (request.schema, wanted)
        return cached[1]

    def classify(self, exc: anthropic.APIError) -> BackendError:
        """The chainette error for an SDK failure, by the core's shared rules (`error_for_status`)."""
        url = public_url(str(exc.request.url))
        if isinstance(exc, anthropic.APITimeoutError):
            return RetryableError(f"engine '{self.engine}': {url} did not answer in time", kind="timeout")
        if isinstance(exc, anthropic.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return RetryableError(self.scrub(f"engine '{self.engine}': cannot connect to {url}{cause}"), kind="connection")
        if isinstance(exc, anthropic.APIStatusError):
            message = self.scrub(error_message(exc.response))
            retry_after = parse_retry_after(exc.response.headers)
            return api_error(exc.status_code, message, engine=self.engine, code=error_code(exc.response.content), retry_after=retry_after)
        return RetryableError(self.scrub(f"engine '{self.engine}': {url} answered badly: {exc.message}"), kind="bad_response")

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def aclose(self) -> None:
        await self._client.close()


def api_error(status: int, message: str, *, engine: str, code: str | None, retry_after: float | None = None) -> BackendError:
    """The chainette error for an API error answer (`code`: its error type): an account without credit stops the run
    (a billing_error, or a 400 saying so), the rest follows the core's shared rules (`error_for_status`)."""
    if code == "billing_error" or (status == 400 and NO_CREDIT in message):
        advice = (
            "The account has no credit left: add some with Anthropic, or use another api_key; then run the same command again to resume."
        )
        return EngineError(f"engine '{engine}': HTTP {status}: {message}. {advice}", kind="quota")
    return error_for_status(status, message, engine=engine, retry_after=retry_after, code=code)
