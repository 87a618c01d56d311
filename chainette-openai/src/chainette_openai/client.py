"""The openai backend's client: a Request becomes one Responses API call (`responses.create`) or one Chat
Completions call (`chat.completions.create`), its schema asked for as the engine's profile says.

The SDK's own retries are off (the core retries), every SDK failure becomes a chainette BackendError
whose message and raw text never contain the API key, and the answer is read by `parse_response` or
`parse_chat_completion`. Strict schemas come from the SDK's own conversion (`chainette_openai.strict`).
"""

from __future__ import annotations

import inspect
from typing import Any

import httpx2
import openai
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.responses import AsyncResponses

from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import BackendError, RetryableError, error_code, error_for_status, missing_key, parse_retry_after
from chainette.http import async_client, error_message, split_query
from chainette.openai_format import chat_media_part, parse_chat_completion, wire_messages
from chainette.secrets import public_url
from chainette_openai.options import DEFAULT_KEY_ENV, OpenAIOptions, api_of
from chainette_openai.profiles import resolve, response_format
from chainette_openai.responses import media_part as responses_media_part
from chainette_openai.responses import parse_response, text_format
from chainette_openai.strict import strict_schema

PLACEHOLDER_KEY = "not-needed"
_CONTROL = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
CREATE_FIELDS = {
    "chat": frozenset(inspect.signature(AsyncCompletions.create).parameters) - _CONTROL,
    "responses": frozenset(inspect.signature(AsyncResponses.create).parameters) - _CONTROL,
}


class OpenAIClient:
    """Sends requests for one engine through its API (`api_of`); `transport` replaces the network (tests)."""

    def __init__(self, config: EngineConfig[OpenAIOptions], transport: httpx2.AsyncBaseTransport | None = None):
        self.engine = config.name
        self.model = config.model
        self.api = api_of(config)
        self.profile = resolve(config)
        self._key = config.resolve_api_key(default_env=DEFAULT_KEY_ENV)
        if not self._key and not config.endpoint:
            raise missing_key(
                self.engine, "OpenAI", DEFAULT_KEY_ENV, " An OpenAI-compatible server that needs no key only needs endpoint=...."
            )
        http_client = async_client(config.options, transport=transport)
        base_url, query = split_query(config.endpoint) if config.endpoint else (None, {})
        self._client = openai.AsyncOpenAI(
            api_key=self._key or PLACEHOLDER_KEY,
            base_url=base_url,
            default_query=query or None,
            organization=config.options.organization,
            project=config.options.project,
            max_retries=0,
            timeout=http_client.timeout,
            http_client=http_client,
        )
        self._create: Any = self._client.responses.create if self.api == "responses" else self._client.chat.completions.create
        self._formats: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    async def complete(self, request: Request) -> Answer:
        kwargs, extra_body = self._arguments(request)
        try:
            reply = await self._create(**kwargs, extra_body=extra_body or None)
        except openai.APIError as exc:
            raise self._classify(exc) from None
        body = reply.to_dict(warnings=False) if isinstance(reply, openai.BaseModel) else reply
        try:
            return self.parse(body)
        except BackendError as exc:
            if exc.raw:
                exc.raw = self._scrub(exc.raw)
            raise

    def parse(self, body: Any) -> Answer:
        """The Answer in a decoded reply of the engine's API."""
        if self.api == "responses":
            return parse_response(body, engine=self.engine)
        return parse_chat_completion(body, engine=self.engine)

    def _arguments(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """The SDK call's arguments for `request`, and the fields the SDK does not know (its extra_body)."""
        if self.api == "responses":
            messages = wire_messages(request.messages, responses_media_part, text_type="input_text")
            kwargs: dict[str, Any] = {"model": self.model, "input": messages, "store": False, **self._format(request)}
        else:
            kwargs = {"model": self.model, "messages": wire_messages(request.messages, chat_media_part), **self._format(request)}
        extra_body = {}
        known = CREATE_FIELDS[self.api]
        for key, value in request.sampling.items():
            if key in known:
                kwargs[key] = value
            else:
                extra_body[key] = value
        return kwargs, extra_body

    def _format(self, request: Request) -> dict[str, Any]:
        """The arguments that ask for the request's schema as the profile says (`text` or `response_format`, or
        none), made once per schema object (kept alive, so that its id stays unique); a strict schema is the SDK's
        conversion of the request's model."""
        cached = self._formats.get(id(request.schema))
        if cached is None or cached[0] is not request.schema:
            profile, model = self.profile, request.output_model
            strict = strict_schema(model) if profile.strict and model is not None and profile.structured_output == "json_schema" else None
            if self.api == "responses":
                wanted = {} if profile.structured_output == "prompt" else {"text": {"format": text_format(request, strict)}}
            else:
                found = response_format(profile, request, strict)
                wanted = {} if found is None else {"response_format": found}
            cached = self._formats[id(request.schema)] = (request.schema, wanted)
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
