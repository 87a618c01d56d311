"""The openai backend's client: a Request becomes one `chat.completions.create` call with a strict JSON schema.

The SDK's own retries are off (the core retries), every SDK failure becomes a chainette BackendError
whose message and raw text never contain the API key, and the answer is read by `parse_chat_completion`.
"""

from __future__ import annotations

import inspect
from typing import Any

import httpx2
import openai
from openai.resources.chat.completions import AsyncCompletions

from chainette.client import Answer, Request
from chainette.engines import EngineConfig, public_url
from chainette.errors import BackendError, EngineError, RetryableError, error_code, error_for_status, parse_retry_after
from chainette.http import async_client, error_message
from chainette.openai_format import parse_chat_completion
from chainette.schema import strict_json_schema
from chainette_openai import DEFAULT_KEY_ENV, OpenAIOptions

PLACEHOLDER_KEY = "not-needed"
_CONTROL = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
CREATE_FIELDS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - _CONTROL


class OpenAIClient:
    """Sends chat completions for one engine; `transport` replaces the network (tests)."""

    def __init__(self, config: EngineConfig[OpenAIOptions], transport: httpx2.AsyncBaseTransport | None = None):
        self.engine = config.name
        self.model = config.model
        self._key = config.resolve_api_key(default_env=DEFAULT_KEY_ENV)
        if not self._key and not config.endpoint:
            env = config.api_key_env or DEFAULT_KEY_ENV
            raise EngineError(
                f"engine '{self.engine}': no OpenAI API key (the environment variable {env} is not set). Provide it with "
                f"register_engine(api_key=...), with api_key_env='VAR' naming the environment variable that holds it, or by setting "
                f"{DEFAULT_KEY_ENV}. An OpenAI-compatible server that needs no key only needs endpoint=....",
                kind="authentication",
            )
        http_client = async_client(config.options, transport=transport)
        self._client = openai.AsyncOpenAI(
            api_key=self._key or PLACEHOLDER_KEY,
            base_url=config.endpoint,
            organization=config.options.organization,
            project=config.options.project,
            max_retries=0,
            timeout=http_client.timeout,
            http_client=http_client,
        )
        self._formats: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    async def complete(self, request: Request) -> Answer:
        kwargs, extra_body = self._arguments(request)
        try:
            completion = await self._client.chat.completions.create(**kwargs, extra_body=extra_body or None)
        except openai.APIError as exc:
            raise self._classify(exc) from None
        body = completion.to_dict(warnings=False) if isinstance(completion, openai.BaseModel) else completion
        try:
            return parse_chat_completion(body, engine=self.engine)
        except BackendError as exc:
            if exc.raw:
                exc.raw = self._scrub(exc.raw)
            raise

    def _arguments(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """The `chat.completions.create` arguments for `request`, and the fields the SDK does not know (its extra_body)."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages, "response_format": self._response_format(request)}
        extra_body = {}
        for key, value in request.sampling.items():
            if key in CREATE_FIELDS:
                kwargs[key] = value
            else:
                extra_body[key] = value
        return kwargs, extra_body

    def _response_format(self, request: Request) -> dict[str, Any]:
        """The response_format for the request's schema, built once per schema object (kept alive so its id stays unique)."""
        cached = self._formats.get(id(request.schema))
        if cached is None or cached[0] is not request.schema:
            strict = {"name": request.schema_name, "schema": strict_json_schema(request.schema), "strict": True}
            cached = self._formats[id(request.schema)] = (request.schema, {"type": "json_schema", "json_schema": strict})
        return cached[1]

    def _classify(self, exc: openai.APIError) -> BackendError:
        url = public_url(str(exc.request.url))
        if isinstance(exc, openai.APITimeoutError):
            return RetryableError(f"engine '{self.engine}': {url} did not answer in time", kind="timeout")
        if isinstance(exc, openai.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return RetryableError(self._scrub(f"engine '{self.engine}': cannot connect to {url}{cause}"), kind="connection")
        if isinstance(exc, openai.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers)
            message = self._scrub(error_message(exc.response))
            code = error_code(exc.response.content)
            return error_for_status(exc.status_code, message, engine=self.engine, retry_after=retry_after, code=code)
        return RetryableError(self._scrub(f"engine '{self.engine}': {url} answered badly: {exc.message}"), kind="bad_response")

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def aclose(self) -> None:
        await self._client.close()
