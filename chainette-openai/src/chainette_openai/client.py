"""The openai backend's client: a Request becomes one `chat.completions.create` call with a strict JSON schema.

The SDK's own retries are off (the core retries), and every SDK failure becomes a chainette BackendError
whose message never contains the API key.
"""

from __future__ import annotations

import inspect
from typing import Any

import httpx2
import openai
from openai.resources.chat.completions import AsyncCompletions
from pydantic import BaseModel

from chainette.client import Answer, Request
from chainette.engines import EngineConfig, public_url
from chainette.errors import BackendError, EngineError, RetryableError, RowError, error_for_status, finish_error, parse_retry_after
from chainette.http import CONNECT_TIMEOUT
from chainette.openai_format import parse_usage
from chainette.schema import strict_json_schema

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
PLACEHOLDER_KEY = "not-needed"
_CONTROL = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
CREATE_FIELDS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - _CONTROL


class OpenAIClient:
    """Sends chat completions for one engine; `transport` replaces the network (tests)."""

    def __init__(self, config: EngineConfig, transport: httpx2.AsyncBaseTransport | None = None):
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
        options = config.options
        pool = options.max_concurrency
        timeout = httpx2.Timeout(options.timeout, connect=min(CONNECT_TIMEOUT, options.timeout))
        http_client = httpx2.AsyncClient(
            timeout=timeout,
            limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
            transport=transport,
        )
        self._client = openai.AsyncOpenAI(
            api_key=self._key or PLACEHOLDER_KEY,
            base_url=config.endpoint,
            organization=getattr(options, "organization", None),
            project=getattr(options, "project", None),
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
        )
        self._formats: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    async def complete(self, request: Request) -> Answer:
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages, "response_format": self._response_format(request)}
        extra_body = {}
        for key, value in request.sampling.items():
            if key in CREATE_FIELDS:
                kwargs[key] = value
            else:
                extra_body[key] = value
        try:
            completion = await self._client.chat.completions.create(**kwargs, extra_body=extra_body or None)
        except openai.APIError as exc:
            raise self._classify(exc) from None
        return self._answer(completion)

    def _response_format(self, request: Request) -> dict[str, Any]:
        """The response_format for the request's schema, built once per schema object (kept alive so its id stays unique)."""
        cached = self._formats.get(id(request.schema))
        if cached is None or cached[0] is not request.schema:
            strict = {"name": request.schema_name, "schema": strict_json_schema(request.schema), "strict": True}
            cached = self._formats[id(request.schema)] = (request.schema, {"type": "json_schema", "json_schema": strict})
        return cached[1]

    def _answer(self, completion: Any) -> Answer:
        """The Answer in the SDK's completion; every error raised carries the usage the server reported."""
        report = getattr(completion, "usage", None)
        usage = parse_usage(report.model_dump() if isinstance(report, BaseModel) else report)
        if not getattr(completion, "choices", None):
            raise RetryableError(
                f"engine '{self.engine}': the answer is not a chat completion (no choices)",
                kind="bad_response",
                raw=self._scrub(str(completion)[:2000]),
                usage=usage,
            )
        choice = completion.choices[0]
        message = choice.message
        if message.refusal:
            raise RowError(
                f"engine '{self.engine}': the model refused: {message.refusal}", kind="refusal", raw=message.refusal, usage=usage
            )
        error = finish_error(choice.finish_reason, engine=self.engine, text=message.content, usage=usage)
        if error is not None:
            raise error
        if not message.content:
            raise RowError(f"engine '{self.engine}': the answer is empty", kind="empty_answer", usage=usage)
        extra = message.model_extra or {}
        reasoning = extra.get("reasoning") or extra.get("reasoning_content")
        return Answer(message.content, reasoning=reasoning if isinstance(reasoning, str) else None, usage=usage)

    def _classify(self, exc: openai.APIError) -> BackendError:
        url = public_url(str(exc.request.url))
        if isinstance(exc, openai.APITimeoutError):
            return RetryableError(f"engine '{self.engine}': {url} did not answer in time", kind="timeout")
        if isinstance(exc, openai.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return RetryableError(self._scrub(f"engine '{self.engine}': cannot connect to {url}{cause}"), kind="connection")
        if isinstance(exc, openai.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers)
            return error_for_status(exc.status_code, self._scrub(_status_detail(exc)), engine=self.engine, retry_after=retry_after)
        return RetryableError(self._scrub(f"engine '{self.engine}': {url} answered badly: {exc.message}"), kind="bad_response")

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def aclose(self) -> None:
        await self._client.close()


def _status_detail(exc: openai.APIStatusError) -> str:
    """The server's error text: OpenAI's error `message`, a plain error string (vLLM's 401), or the SDK's summary."""
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:500]
    return str(body or exc.message)[:500]
