"""Chainette: typed LLM pipelines. The public API, loaded lazily so that `import chainette` stays light."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Answer": "chainette.client",
    "Apply": "chainette.nodes",
    "BackendError": "chainette.errors",
    "Branch": "chainette.nodes",
    "Chain": "chainette.chain",
    "ChainetteError": "chainette.errors",
    "Client": "chainette.client",
    "ConfigError": "chainette.errors",
    "EngineConfig": "chainette.engines",
    "EngineError": "chainette.errors",
    "EngineOptions": "chainette.engines",
    "Request": "chainette.client",
    "RetryableError": "chainette.errors",
    "RowError": "chainette.errors",
    "RunResult": "chainette.store",
    "SamplingParams": "chainette.sampling",
    "Step": "chainette.nodes",
    "Usage": "chainette.client",
    "apply": "chainette.nodes",
    "get_engine": "chainette.engines",
    "hookimpl": "chainette.hookspecs",
    "load_engines_from_yaml": "chainette.engines",
    "register_engine": "chainette.engines",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chainette' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from chainette.chain import Chain
    from chainette.client import Answer, Client, Request, Usage
    from chainette.engines import EngineConfig, EngineOptions, get_engine, load_engines_from_yaml, register_engine
    from chainette.errors import BackendError, ChainetteError, ConfigError, EngineError, RetryableError, RowError
    from chainette.hookspecs import hookimpl
    from chainette.nodes import Apply, Branch, Step, apply
    from chainette.sampling import SamplingParams
    from chainette.store import RunResult
