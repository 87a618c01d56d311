"""Error types (what the user must fix, how a backend request failed) and the one-line descriptions errors quote."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
import json
from pathlib import Path
import re
import time
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

    from chainette.client import Answer, Usage
    from chainette.nodes import Apply, Branch, Step

QUOTA_CODE = "insufficient_quota"


class ChainetteError(Exception):
    """A problem the user can fix. The CLI prints it as one paragraph, without a traceback, and exits with `exit_code`."""

    exit_code = 1


class ConfigError(ChainetteError):
    """A chain, engine or template is declared wrongly; `loc` is the key path the problem is about (if known),
    inside the declaration of `node` when one is given (the chain's Step, Apply or Branch at fault)."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = (), *, node: Step | Apply | Branch | None = None):
        super().__init__(message)
        self.loc = loc
        self.node = node


class InputError(ChainetteError):
    """An input file cannot be read at all (a bad row goes to the errors file instead)."""


class RunInterrupted(ChainetteError):
    """The run was stopped (Ctrl-C or SIGTERM); its engines were stopped and its finished rows kept."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class BackendError(Exception):
    """A request to a backend failed; `kind` is a short label written to the errors file, `usage` the tokens the server reported."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "backend_error",
        retry_after: float | None = None,
        raw: str | None = None,
        usage: Usage | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.raw = raw
        self.usage = usage


class RetryableError(BackendError):
    """A transient failure (connection, timeout, 408/409/429/5xx): the core's retry policy may try again."""


class RowError(BackendError):
    """This row's request failed for good (bad request, refusal, truncation): the row goes to the errors file."""


class EngineError(BackendError, ChainetteError):
    """The engine cannot serve any row (authentication, unknown model, unreachable): the run stops."""


RATE_LIMITS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
    ("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"),
)
"""Providers' rate-limit headers: each limit's remaining count, and when it resets. OpenAI's (also sent by Groq,
OpenRouter and other compatible APIs) give a duration (`20ms`, `1s`, `6m0s`); Anthropic's an RFC 3339 time."""
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `Retry-After-Ms` or `Retry-After` (seconds or an HTTP date), else from the provider's
    rate-limit headers (the reset of each limit spent), if present."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return rate_limit_reset(headers)
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds until the last spent rate limit resets (RATE_LIMITS: a limit whose remaining count is 0), or None."""
    waits = [_reset_in(headers.get(reset) or "") for remaining, reset in RATE_LIMITS if headers.get(remaining) == "0"]
    found = [wait for wait in waits if wait is not None]
    return max(found) if found else None


def _reset_in(text: str) -> float | None:
    """Seconds until a reset given as a duration or as an RFC 3339 time (never negative); None for anything else."""
    found = _duration(text)
    if found is not None or not text:
        return found
    try:
        return max(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - time.time(), 0.0)
    except ValueError:
        return None


def _duration(text: str) -> float | None:
    """Seconds in a duration such as `20ms`, `1s`, `6m0s` or `1h2m3.5s`; None for anything else."""
    parts = DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text.strip():
        return None
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def missing_key(engine: str, provider: str, variable: str, hint: str = "") -> EngineError:
    """The error of an engine that has no API key: where the backend looked (`variable`), how to give one, and the
    backend's own `hint`."""
    return EngineError(
        f"engine '{engine}': no {provider} API key (the environment variable {variable} is not set). Provide it with "
        f"register_engine(api_key=...), with api_key_env='VAR' naming the environment variable that holds it, or by setting "
        f"{variable}.{hint}",
        kind="authentication",
    )


def error_for_status(status: int, message: str, *, engine: str, retry_after: float | None = None, code: str | None = None) -> BackendError:
    """Classify an HTTP error status, with the server's `message` and error `code` (see `error_code`), into the error
    the core's retry policy understands: EngineError when no row can succeed, RetryableError, else RowError."""
    text = f"engine '{engine}': HTTP {status}: {message}"
    if status in (401, 403):
        return EngineError(f"{text}. Check the engine's api_key or api_key_env.", kind="authentication")
    if status == 404:
        return EngineError(f"{text}. Check the engine's model name and endpoint.", kind="not_found")
    if status == 429 and (code == QUOTA_CODE or QUOTA_CODE in message):
        advice = "The account has no credit or quota left: add some with the provider, or use another api_key"
        return EngineError(f"{text}. {advice}; then run the same command again to resume.", kind="quota")
    if status == 501:
        advice = "The server does not implement this request: check the engine's endpoint, and that its server supports"
        return EngineError(f"{text}. {advice} what the step asks for (structured output, reasoning).", kind="unsupported")
    if status in (408, 409, 429) or status >= 500:
        return RetryableError(text, kind=f"http_{status}", retry_after=retry_after)
    return RowError(text, kind=f"http_{status}")


def error_code(body: str | bytes) -> str | None:
    """The error code of an OpenAI-style error body (`{"error": {"code": ..., "type": ...}}`, code first), or None."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    return next((value for value in (error.get("code"), error.get("type")) if isinstance(value, str)), None)


# Finish reasons of an answer stopped before its end: at the token limit, or by vLLM's repetition check. Such an
# answer is kept only if it is valid as it is.
CUT_OFF = frozenset({"length", "repetition"})


def finish_error(reason: str | None, *, engine: str, text: str | None, usage: Usage | None = None) -> BackendError | None:
    """The error (carrying `usage`) for a finish reason that makes an answer unusable, else None: the content filter
    (a RowError), a request the server aborted (vLLM's `abort`: retryable). A cut-off answer (CUT_OFF) is not an
    error here: the step keeps it if it validates (`truncated` otherwise)."""
    if reason == "abort":
        return RetryableError(f"engine '{engine}': the server aborted the request", kind="aborted", raw=text, usage=usage)
    if reason == "content_filter":
        message = f"engine '{engine}': the answer was withheld by the content filter"
        return RowError(message, kind="content_filter", raw=text, usage=usage)
    return None


def truncated(engine: str, answer: Answer, exc: ValidationError) -> RowError:
    """The row error for a cut-off answer that is not valid as it is (a repair would be cut off again)."""
    message = (
        f"engine '{engine}': the answer was cut off (at the token limit, or by the server's repetition check) and is not "
        f"valid as it is ({describe_validation_error(exc)}); raise max_tokens"
    )
    return RowError(message, kind="truncated", raw=answer.text, usage=answer.usage)


def describe_validation_error(exc: ValidationError, loc_format: str = "{}") -> str:
    """Every problem of `exc` on one line: `field.sub: message; other: message` (`loc_format` writes each location)."""
    return "; ".join(f"{loc_format.format('.'.join(map(str, e['loc'])) or '(root)')}: {e['msg']}" for e in exc.errors(include_url=False))


def raised_at(exc: BaseException, roots: Sequence[Path] = ()) -> str:
    """' at file:line' of the line that raised `exc` (a SyntaxError's own), the innermost under `roots` if any is; '' if unknown."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" at {exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    own = [f for f in frames if any(Path(f.filename).resolve().is_relative_to(root) for root in roots)]
    chosen = own or frames
    return f" at {chosen[-1].filename}:{chosen[-1].lineno}" if chosen else ""
