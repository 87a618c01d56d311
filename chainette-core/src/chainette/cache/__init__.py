"""The response cache: valid answers of earlier runs, found again by what the server would see (chainette.cache.keys),
kept in one SQLite file per user (chainette.cache.database) that every chain and output directory share.

A run uses it unless told not to (`cache=False`, `--no-cache`, an engine's `cache=False`, a step's `cache=False`);
`"refresh"` asks again and replaces the stored answers. Its place is $CHAINETTE_CACHE_DIR, else the platform's
cache folder; its size cap $CHAINETTE_CACHE_MAX_SIZE (e.g. `500MB`, `20GB`), else `DEFAULT_MAX_SIZE`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import os
from pathlib import Path
import re
from typing import Any, Literal

from chainette.cache.database import CachedAnswer, CacheUnavailable, ResponseCache, turned_off
from chainette.cache.keys import RequestKeys, deterministic, engine_identity
from chainette.client import Answer, Request
from chainette.engines import EngineConfig, EngineOptions
from chainette.errors import ConfigError
from chainette.nodes import Step
from chainette.schema import schema_name

__all__ = ["CacheSetting", "CachedAnswer", "ResponseCache", "StepCache", "cache_path", "max_size", "open_cache", "step_cache", "uses_cache"]

CacheSetting = bool | Literal["refresh"]
DIR_ENV = "CHAINETTE_CACHE_DIR"
SIZE_ENV = "CHAINETTE_CACHE_MAX_SIZE"
FILE_NAME = "responses.sqlite"
DEFAULT_MAX_SIZE = 20 * 1000**3
UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def cache_path(folder: str | os.PathLike[str] | None = None) -> Path:
    """The cache file: in `folder`, else $CHAINETTE_CACHE_DIR, else the platform's user cache folder for chainette."""
    if folder is None:
        folder = os.environ.get(DIR_ENV) or None
    if folder is None:
        from platformdirs import user_cache_dir

        folder = user_cache_dir("chainette", appauthor=False)
    return Path(folder).expanduser() / FILE_NAME


def max_size() -> int:
    """The size cap in bytes: $CHAINETTE_CACHE_MAX_SIZE (a number with an optional unit: 500MB, 2GiB), else the default."""
    text = os.environ.get(SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_SIZE
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text)
    if match is None or match[2].upper() not in UNITS:
        raise ConfigError(f"{SIZE_ENV}={text!r} is not a size: write a number of bytes or one with a unit, such as 500MB or 20GB.")
    return int(float(match[1]) * UNITS[match[2].upper()])


def open_cache(folder: str | os.PathLike[str] | None, notice: Callable[[str], None]) -> ResponseCache | None:
    """The run's response cache, or None (after a `notice` saying why) when the file cannot be used: the run goes on without it."""
    path = cache_path(folder)
    try:
        return ResponseCache(path, max_bytes=max_size(), notice=notice)
    except CacheUnavailable as exc:
        notice(turned_off(exc))
        return None


@dataclass
class StepCache:
    """One step's use of the response cache: `lookup` before a request goes out (unless refreshing), `save` after a valid answer."""

    response_cache: ResponseCache
    keys: RequestKeys
    backend: str
    model: str
    read: bool

    def keys_of(self, request: Request, row_id: str, samples: int) -> list[bytes]:
        """The keys of the first `samples` samples of `request`, made for the row `row_id`."""
        key, messages = self.keys.key, request.messages
        return [key(messages, sample, row_id) for sample in range(samples)]

    def look_up(self, keys: list[bytes]) -> list[CachedAnswer | None]:
        """The answer stored under each of `keys`, or None (every one when refreshing)."""
        return self.response_cache.get_many(keys) if self.read else [None] * len(keys)

    def save(self, key: bytes, answer: Answer) -> None:
        self.response_cache.put(key, self.backend, self.model, answer)


def uses_cache(setting: CacheSetting, config: EngineConfig[EngineOptions], step: Step) -> bool:
    """Whether `step` reads or writes the cache: not when the run (`setting`), its engine or the step itself turn it off."""
    return False not in (setting, config.options.cache, step.cache)


def step_cache(
    response_cache: ResponseCache | None,
    setting: CacheSetting,
    config: EngineConfig[EngineOptions],
    step: Step,
    schema: dict[str, Any],
    sampling: dict[str, Any],
) -> StepCache | None:
    """How `step` uses the cache: not at all when the run, its engine or the step turn it off; write-only when the run or
    the step says "refresh". `schema` and `sampling` (translated, without `n`) are what each of its requests sends."""
    if response_cache is None or not uses_cache(setting, config, step):
        return None
    per_row = not deterministic(step.sampling)
    keys = RequestKeys(engine_identity(config), schema, schema_name(step.output_model), sampling, per_row)
    return StepCache(response_cache, keys, config.backend, config.model, read="refresh" not in (setting, step.cache))
