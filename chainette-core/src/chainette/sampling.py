"""Backend-neutral sampling parameters and the helper backends use to translate them: plain data, no plugin lookup
(the core asks a backend for its translation in `chainette.plugins.translate_sampling`)."""

from __future__ import annotations

from collections.abc import Mapping
import difflib
from typing import Any
import warnings

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chainette.errors import ConfigError, describe_validation_error


class UnsupportedSamplingWarning(UserWarning):
    """A sampling field was set that the engine's backend cannot honour."""


class SamplingParams(BaseModel):
    """Sampling settings for a step. Unset fields (None) leave the backend's default; `extra` passes through verbatim."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    n: int | None = Field(None, ge=1, description="Candidates per row: a step fans each row out into n children.")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stop: list[str] | None) -> list[str] | None:
        """An empty list means no stop strings: it is not sent (some servers refuse `stop: []`)."""
        return stop or None


def as_sampling(value: object, owner: str) -> SamplingParams | None:
    """`value` (SamplingParams, a mapping of its fields, or None) as SamplingParams; a ConfigError naming `owner` and
    the bad field otherwise."""
    if value is None or isinstance(value, SamplingParams):
        return value
    try:
        return SamplingParams.model_validate(value)
    except ValidationError as exc:
        fields = list(SamplingParams.model_fields)
        unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown:
            close = difflib.get_close_matches(unknown[0], fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{owner}: sampling has no field '{unknown[0]}'; {hint}The fields are: {', '.join(fields)}.") from None
        problems = describe_validation_error(exc, "sampling.{}").replace("sampling.(root)", "sampling")
        raise ConfigError(f"{owner}: {problems}.") from None


# The wire names a backend without a translate_sampling hook gets: the OpenAI chat-completions names most
# servers accept. top_k, min_p and repetition_penalty have no such common name; map_sampling warns about them.
DEFAULT_WIRE_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}

_warned: set[tuple[str, str]] = set()


def map_sampling(sampling: SamplingParams | None, names: Mapping[str, str], *, engine: str) -> dict[str, Any]:
    """Rename each set field by `names` (field → wire key); warn once per engine for a set field `names` lacks,
    except `n`, which the core sends as n requests when the backend does not send it.

    `extra` is merged last, so it can override anything.
    """
    if sampling is None:
        return {}
    wire: dict[str, Any] = {}
    for name, value in sampling.model_dump(exclude={"extra"}, exclude_none=True).items():
        if name in names:
            wire[names[name]] = value
        elif name != "n" and (engine, name) not in _warned:
            _warned.add((engine, name))
            warnings.warn(
                f"engine '{engine}' cannot honour sampling field '{name}'; it is not sent. "
                f"Remove it, or pass a backend-specific key through SamplingParams(extra=...).",
                UnsupportedSamplingWarning,
                stacklevel=2,
            )
    wire.update(sampling.extra)
    return wire
