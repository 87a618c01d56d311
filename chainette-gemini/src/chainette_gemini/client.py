"""The gemini backend's client: a Request becomes one `models.generate_content` call of google-genai's async client,
its schema asked for as `response_json_schema` (`chainette_gemini.schema`).

The SDK's own retries are off (the core retries), it sends through the engine's httpx2 client (sized to its
concurrency, never through aiohttp), and every failure becomes a chainette BackendError whose message never holds
the API key. Vertex AI is not supported: requests go to the Gemini Developer API, or to the engine's endpoint.
"""

from __future__ import annotations

import math
import re
from typing import Any

from google import genai
from google.genai import errors, types
import httpx2

from chainette.client import Answer, Request
from chainette.engines import EngineConfig
from chainette.errors import BackendError, EngineError, RetryableError, error_for_status, missing_key, parse_retry_after
from chainette.http import async_client
from chainette_gemini.options import DEFAULT_KEY_ENV, GeminiOptions
from chainette_gemini.schema import gemini_schema
from chainette_gemini.wire import contents_of, parse_response

PLACEHOLDER_KEY = "not-needed"
CONFIG_FIELDS = frozenset(types.GenerateContentConfig.model_fields) - {"http_options"}
RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")  # a google.rpc.RetryInfo delay: "7s", "0.5s"
INVALID_KEY = "API_KEY_INVALID"


class GeminiClient:
    """Sends requests for one engine; `transport` replaces the network (tests)."""

    def __init__(self, config: EngineConfig[GeminiOptions], transport: httpx2.AsyncBaseTransport | None = None):
        self.engine = config.name
        self.model = config.model
        self.options = config.options
        self._key = config.resolve_api_key(default_env=DEFAULT_KEY_ENV)
        if not self._key and not config.endpoint:
            raise missing_key(self.engine, "Gemini", DEFAULT_KEY_ENV, " For GOOGLE_API_KEY, give api_key_env='GOOGLE_API_KEY'.")
        self._http = async_client(config.options, transport=transport)
        http_options = types.HttpOptions(
            base_url=config.endpoint,
            api_version=config.options.api_version,
            timeout=math.ceil(config.options.timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
            httpx_async_client=self._http,
        )
        self._client = genai.Client(
            vertexai=False, api_key=self._key or PLACEHOLDER_KEY, http_options=http_options
        )  # not GOOGLE_GENAI_USE_VERTEXAI
        self._schemas: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    async def complete(self, request: Request) -> Answer:
        system, contents = contents_of(request.messages)
        try:
            response = await self._client.aio.models.generate_content(
                model=self.model, contents=contents, config=self.config(request, system)
            )
        except (errors.APIError, errors.UnknownApiResponseError, httpx2.HTTPError) as exc:
            raise self._classify(exc) from None
        return parse_response(response, engine=self.engine)

    def config(self, request: Request, system: str | None) -> types.GenerateContentConfig:
        """The request's GenerateContentConfig: its schema, the engine's thinking options, its sampling (fields the
        config lacks are added to the request body as they are)."""
        known = {key: value for key, value in request.sampling.items() if key in CONFIG_FIELDS}
        extra = {key: value for key, value in request.sampling.items() if key not in CONFIG_FIELDS}
        thinking = None
        if self.options.thinking_budget is not None or self.options.include_thoughts:
            thinking = types.ThinkingConfig(
                thinking_budget=self.options.thinking_budget, include_thoughts=self.options.include_thoughts or None
            )
        settings: dict[str, Any] = {
            "system_instruction": system,
            "response_mime_type": "application/json",
            "response_json_schema": self._schema(request),
            "thinking_config": thinking,
            **known,
        }
        if extra:
            settings["http_options"] = types.HttpOptions(extra_body=extra)
        return types.GenerateContentConfig(**settings)

    def _schema(self, request: Request) -> dict[str, Any]:
        """The request's schema as Gemini takes it, made once per schema object (kept alive, so its id stays unique)."""
        cached = self._schemas.get(id(request.schema))
        if cached is None or cached[0] is not request.schema:
            cached = self._schemas[id(request.schema)] = (request.schema, gemini_schema(request.schema))
        return cached[1]

    def _classify(self, exc: Exception) -> BackendError:
        if isinstance(exc, httpx2.TimeoutException):
            return RetryableError(f"engine '{self.engine}': Gemini did not answer in time", kind="timeout")
        if isinstance(exc, httpx2.ConnectError):
            return RetryableError(self._scrub(f"engine '{self.engine}': cannot connect to Gemini: {exc}"), kind="connection")
        if isinstance(exc, errors.APIError):
            message = self._scrub(str(exc.message or exc.status or exc))
            if INVALID_KEY in self._reasons(exc):  # Gemini refuses a bad key with HTTP 400, not 401
                return EngineError(f"engine '{self.engine}': {message}. Check the engine's api_key or api_key_env.", kind="authentication")
            return error_for_status(exc.code, message, engine=self.engine, retry_after=self._retry_after(exc))
        return RetryableError(self._scrub(f"engine '{self.engine}': Gemini answered badly: {exc}"), kind="bad_response")

    @staticmethod
    def _details(exc: errors.APIError) -> list[dict[str, Any]]:
        """The `details` of an error body (`{"error": {"code", "message", "status", "details": [...]}}`)."""
        error = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else None
        found = error.get("details") if isinstance(error, dict) else None
        return [detail for detail in found if isinstance(detail, dict)] if isinstance(found, list) else []

    def _reasons(self, exc: errors.APIError) -> set[str]:
        """The `ErrorInfo.reason`s of an error body (API_KEY_INVALID, ...)."""
        return {str(detail["reason"]) for detail in self._details(exc) if "reason" in detail}

    def _retry_after(self, exc: errors.APIError) -> float | None:
        """Seconds to wait: the error body's `RetryInfo.retryDelay` (`"7s"`), else the Retry-After header."""
        for detail in self._details(exc):
            found = RETRY_DELAY.match(str(detail.get("retryDelay", "")))
            if found:
                return float(found.group(1))
        headers = getattr(exc.response, "headers", None)
        return parse_retry_after(headers) if headers is not None else None

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def aclose(self) -> None:
        await self._http.aclose()
        self._client.close()  # the SDK's own sync client, never used
