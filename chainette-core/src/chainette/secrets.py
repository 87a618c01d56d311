"""Secret values of engines, found by type, read cleanly, and their removal from text that leaves the program.

A backend declares an option that can hold a secret as a pydantic `SecretStr` (alone or inside a
container: `dict[str, SecretStr]`, `list[SecretStr]`, `SecretStr | None`, a nested model). Such
values are masked wherever options are dumped (`model_dump(mode="json")`, `repr`); the credentials and
query-string values of an engine's URLs are secrets too (`url_secrets`). `redact` and `redact_data` are the
safety net for free text (error messages, tracebacks, events, server logs) that may quote one, in any of the
forms a secret takes when it is escaped or encoded (`secret_forms`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from functools import lru_cache
import json
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

from chainette.errors import ConfigError

if TYPE_CHECKING:
    from chainette.engines import EngineConfig, EngineOptions

MASK = str(SecretStr("secret"))  # pydantic's "**********", so that redacted text and dumped options look alike
MIN_LENGTH = 4  # shorter values are not masked: replacing them would garble ordinary text
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def clean_key(value: object, source: str) -> str:
    """`value` without surrounding whitespace (a key read from a file often ends in a newline); a ConfigError naming
    `source` (the option or environment variable, never the value) when it is not a string or holds a control character."""
    if not isinstance(value, str):
        raise ConfigError(
            f"{source} must be a string; quote it (in YAML: api_key: '...'), or better, name an environment variable with api_key_env."
        )
    key = value.strip()
    if _CONTROL.search(key):
        raise ConfigError(
            f"{source} holds a control character (a newline, tab or NUL inside the key, not at its ends), so it cannot be "
            "sent in a header; it is most likely two values run together. Set it to the key alone."
        )
    return key


def engine_secrets(config: EngineConfig[EngineOptions], default_env: str | None = None) -> frozenset[str]:
    """Every secret value of `config`: each SecretStr in it (api_key, options), the key in `api_key_env` (else `default_env`,
    else its backend's `key_env`) as read and as stripped, and the credentials and query-string values of its URLs.
    Never raises (it feeds redaction)."""
    found = {secret.get_secret_value() for secret in secret_strs(config)}
    variable = config.api_key_env or default_env or config.options.key_env
    raw = os.environ.get(variable, "") if variable else ""
    found |= {raw, raw.strip()}
    for url in config.urls:
        found |= url_secrets(url)
    return frozenset(value for value in found if value)


def url_secrets(url: str | None) -> set[str]:
    """The secrets a URL holds: its userinfo (`user:password@` whole, the password alone; a bare `token@` whole) and the
    value of each query-string parameter (a bare `?token` whole), each as written and decoded. A user name alone is not
    one: masking it (`admin`) everywhere would garble ordinary text, and shown URLs drop the userinfo anyway."""
    if not url:
        return set()
    parts = urlsplit(url)
    found = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found |= {userinfo, userinfo.partition(":")[2]}
    for segment in parts.query.split("&"):
        found.add(segment.split("=", 1)[1] if "=" in segment else segment)
    return {form for value in found if value for form in (value, unquote(value), unquote_plus(value))}


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


def _escaped(text: str) -> str:
    """`text` with Python's backslash escapes (newline as `\\n`), quotes left alone."""
    return text.encode("unicode_escape").decode("ascii")


def _bytes_escaped(text: str) -> str:
    """`text`'s UTF-8 bytes as a bytes repr writes them between its quotes (`b'...'`), quotes left alone."""
    return text.encode().decode("latin-1").encode("unicode_escape").decode("ascii")


# The ways text quoting a secret escapes or encodes it: repr and bytes repr (quotes escaped for either quote
# character), JSON (ASCII or not), percent-encoding (all reserved characters or all but `/`), form encoding (`+`).
_ENCODINGS: tuple[Callable[[str], str], ...] = (
    lambda text: repr(text)[1:-1],
    lambda text: repr(text.encode())[2:-1],
    _escaped,
    lambda text: _escaped(text).replace("'", "\\'"),
    lambda text: _escaped(text).replace('"', '\\"'),
    _bytes_escaped,
    lambda text: _bytes_escaped(text).replace("'", "\\'"),
    lambda text: json.dumps(text)[1:-1],
    lambda text: json.dumps(text, ensure_ascii=False)[1:-1],
    lambda text: quote(text, safe=""),
    quote,
    quote_plus,
)


def secret_forms(secret: str) -> set[str]:
    """`secret` as it is and in every form the encodings give, applied once or twice (JSON of a repr, say); a
    percent-encoded form also with lower-case hex digits (`%2f`), as some encoders write them."""
    once = {secret, *(encode(secret) for encode in _ENCODINGS)}
    twice = once | {encode(form) for form in once for encode in _ENCODINGS}
    return twice | {_PERCENT.sub(lambda escape: escape.group().lower(), form) for form in twice}


@lru_cache(maxsize=64)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    """One regular expression matching every form of every secret of at least MIN_LENGTH characters, longest first
    (so that none is left in part). Built once per set of secrets."""
    forms = {form for secret in secrets if len(secret) >= MIN_LENGTH for form in secret_forms(secret)}
    if not forms:
        return None
    return re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))


def redact(text: str, secrets: Collection[str]) -> str:
    """`text` with every form (`secret_forms`) of every secret of at least MIN_LENGTH characters replaced by MASK."""
    pattern = _pattern(frozenset(secrets))
    return text if pattern is None else pattern.sub(MASK, text)


def redact_data(value: Any, secrets: Collection[str]) -> Any:
    """JSON-like `value` (an event field, a run.json summary) with `redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_data(key, secrets): redact_data(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item, secrets) for item in value]
    return value


def public_url(url: str | None) -> str | None:
    """`url` safe to show or write: without `user:password@` credentials, each query-string value as MASK
    (`?api-key=**********`; a bare `?token` is MASK whole)."""
    if not url:
        return url
    parts = urlsplit(url)
    query = "&".join(_masked(segment) for segment in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query=query))


def _masked(segment: str) -> str:
    """One `name=value` of a query string with its value masked (a bare value masked whole, an empty one kept)."""
    if "=" in segment:
        return f"{segment.split('=', 1)[0]}={MASK}"
    return MASK if segment else segment
