"""Chainette: typed LLM pipelines. The public API, loaded lazily so that `import chainette` stays light."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Answer": "chainette.client",
    "Apply": "chainette.nodes",
    "Audio": "chainette.media",
    "BackendError": "chainette.errors",
    "Branch": "chainette.nodes",
    "Chain": "chainette.chain",
    "ChainetteError": "chainette.errors",
    "Client": "chainette.client",
    "ConfigError": "chainette.errors",
    "Document": "chainette.media",
    "EngineConfig": "chainette.engines",
    "EngineError": "chainette.errors",
    "EngineOptions": "chainette.engines",
    "Image": "chainette.media",
    "Request": "chainette.client",
    "RetryableError": "chainette.errors",
    "RowError": "chainette.errors",
    "RunResult": "chainette.results",
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


if TYPE_CHECKING:  # explicit re-exports (`X as X`), so that strict type checkers see the public API
    from chainette.chain import Chain as Chain
    from chainette.client import Answer as Answer
    from chainette.client import Client as Client
    from chainette.client import Request as Request
    from chainette.client import Usage as Usage
    from chainette.engines import EngineConfig as EngineConfig
    from chainette.engines import EngineOptions as EngineOptions
    from chainette.engines import get_engine as get_engine
    from chainette.engines import load_engines_from_yaml as load_engines_from_yaml
    from chainette.engines import register_engine as register_engine
    from chainette.errors import BackendError as BackendError
    from chainette.errors import ChainetteError as ChainetteError
    from chainette.errors import ConfigError as ConfigError
    from chainette.errors import EngineError as EngineError
    from chainette.errors import RetryableError as RetryableError
    from chainette.errors import RowError as RowError
    from chainette.hookspecs import hookimpl as hookimpl
    from chainette.media import Audio as Audio
    from chainette.media import Document as Document
    from chainette.media import Image as Image
    from chainette.nodes import Apply as Apply
    from chainette.nodes import Branch as Branch
    from chainette.nodes import Step as Step
    from chainette.nodes import apply as apply
    from chainette.results import RunResult as RunResult
    from chainette.sampling import SamplingParams as SamplingParams
