"""The probe behind `profile="auto"`: a few small requests at start that find how a compatible server wants the
schema and the token limit, by what it does rather than by what it calls itself.

Structured output: the first form, in the order json_schema, json_object (schema), json_object (value), whose
answer is the probe schema's JSON object; none gives `prompt`. Token limit: `max_completion_tokens` only when a
request carrying `max_completion_tokens: 1` and `max_tokens: 16` stops at 1 token, else `max_tokens` (the field
nearly every compatible server reads).
"""

from __future__ import annotations

import json
from typing import Any
import warnings

import httpx2

from chainette.engines import EngineConfig
from chainette.http import join_url, request_timeout
from chainette.secrets import public_url
from chainette_openai.options import OpenAIOptions
from chainette_openai.profiles import Profile, StructuredOutput, TokenLimit, probed

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
FORMATS: dict[StructuredOutput, dict[str, Any]] = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "probe", "schema": SCHEMA}},
    "json_object": {"type": "json_object", "schema": SCHEMA},
    "json_object_value": {"type": "json_object", "value": SCHEMA},
}
PROMPT = [{"role": "user", "content": 'Answer with the JSON object {"ok": true} and nothing else.'}]
COUNTING = [{"role": "user", "content": "Count from 1 to 100, separated by spaces."}]


class ServerProfileWarning(UserWarning):
    """What the probe found, so that the engine can name it and skip the probe next time."""


def probe_once(config: EngineConfig[OpenAIOptions], headers: dict[str, str] | None) -> None:
    """Probe the engine's server on its first use in this process; what it takes is kept in `profiles.probed`."""
    key = (config.endpoint or "", config.model)
    if key not in probed:
        found = Profile(_structured_output(config, headers), _token_limit(config, headers))
        probed[key] = found
        warnings.warn(
            f"Engine '{config.name}': probed {public_url(config.endpoint)}: structured_output={found.structured_output!r}, "
            f"token_limit={found.token_limit!r}. Set these two options on the engine to skip the probe.",
            ServerProfileWarning,
            stacklevel=2,
        )


def _structured_output(config: EngineConfig[OpenAIOptions], headers: dict[str, str] | None) -> StructuredOutput:
    for mode, response_format in FORMATS.items():
        body = _ask(config, headers, {"messages": PROMPT, "response_format": response_format, "max_tokens": 200})
        if body is not None and _is_probe_answer(body):
            return mode
    return "prompt"


def _token_limit(config: EngineConfig[OpenAIOptions], headers: dict[str, str] | None) -> TokenLimit:
    body = _ask(config, headers, {"messages": COUNTING, "max_completion_tokens": 1, "max_tokens": 16})
    if body is None:
        return "max_tokens"
    choice = (body.get("choices") or [{}])[0]
    used = (body.get("usage") or {}).get("completion_tokens")
    return "max_completion_tokens" if used == 1 and choice.get("finish_reason") == "length" else "max_tokens"


def _ask(config: EngineConfig[OpenAIOptions], headers: dict[str, str] | None, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The decoded answer of one chat request, or None when the server refuses it or does not answer well."""
    assert config.endpoint is not None
    url = join_url(config.endpoint, "/chat/completions")
    try:
        response = httpx2.post(url, json={"model": config.model, **fields}, headers=headers, timeout=request_timeout(config.options))
        body = response.json() if response.status_code == 200 else None
    except (httpx2.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _is_probe_answer(body: dict[str, Any]) -> bool:
    """Whether the chat completion's content is the probe schema's object (the server applied the schema)."""
    try:
        content = body["choices"][0]["message"]["content"]
        answer = json.loads(content)
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return isinstance(answer, dict) and isinstance(answer.get("ok"), bool) and set(answer) == {"ok"}
