"""Secret values of engines, found by type, and their removal from text that leaves the program.

A backend declares an option that can hold a secret as a pydantic `SecretStr` (alone or inside a
container: `dict[str, SecretStr]`, `list[SecretStr]`, `SecretStr | None`, a nested model). Such
values are masked wherever options are dumped (`model_dump(mode="json")`, `repr`); `redact` and
`redact_data` are the safety net for free text (error messages, events, server logs) that may quote one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

from chainette.engines import EngineConfig, EngineOptions, registered_engines

MASK = str(SecretStr("secret"))  # pydantic's "**********", so that redacted text and dumped options look alike
MIN_LENGTH = 4  # shorter values are not masked: replacing them would garble ordinary text


def engine_secrets(config: EngineConfig[EngineOptions], default_env: str | None = None) -> frozenset[str]:
    """Every secret value of `config`: each SecretStr in it (api_key, options) and the key read from `api_key_env` (or `default_env`)."""
    found = {secret.get_secret_value() for secret in secret_strs(config)}
    key = config.resolve_api_key(default_env)
    return frozenset({*found, key} if key else found)


def registered_secrets() -> frozenset[str]:
    """The secret values of every registered engine."""
    return frozenset().union(*(engine_secrets(config) for config in registered_engines().values()))


def secret_strs(value: Any) -> Iterator[SecretStr]:
    """Every SecretStr in `value`, searched through pydantic models, dicts (keys and values), lists, tuples and sets."""
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_strs(getattr(value, name))
    elif isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            yield from secret_strs(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from secret_strs(item)


def redact(text: str, secrets: Collection[str]) -> str:
    """`text` with every secret of at least MIN_LENGTH characters replaced by MASK (longest first, so none is left in part)."""
    for secret in sorted((s for s in set(secrets) if len(s) >= MIN_LENGTH), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_data(value: Any, secrets: Collection[str]) -> Any:
    """JSON-like `value` (an event field, a run.json summary) with `redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_data(key, secrets): redact_data(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item, secrets) for item in value]
    return value
