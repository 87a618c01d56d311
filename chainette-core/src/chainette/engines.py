"""Engines: a named backend + model + options, registered by name and used by steps."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from chainette.errors import ConfigError


class EngineOptions(BaseModel):
    """Options every backend accepts. A backend subclasses this to add its own and change defaults.

    An option that can hold a secret is typed `SecretStr` (also inside containers, e.g. `dict[str, SecretStr]`):
    its value is then masked in graph.json, `chainette inspect` and repr, and redacted from errors (chainette.secrets).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: int = Field(16, ge=1, description="Requests in flight at once for this engine.")
    timeout: float = Field(120.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(6, ge=0, description="Retries of a request after a transient failure.")
    retry_budget: float = Field(600.0, gt=0, description="Seconds a request may spend retrying, waits included.")
    requests_per_minute: int | None = Field(None, ge=1, description="Request rate limit (token bucket).")
    tokens_per_minute: int | None = Field(None, ge=1, description="Token rate limit (estimated before, corrected after each request).")
    price_per_million_input: float | None = Field(None, ge=0, description="USD per million input tokens, for cost estimates.")
    price_per_million_output: float | None = Field(None, ge=0, description="USD per million output tokens, for cost estimates.")


class EngineConfig(BaseModel):
    """A registered engine. `api_key` is a SecretStr: it is never printed or written anywhere."""

    model_config = ConfigDict(frozen=True)

    name: str
    backend: str
    model: str
    endpoint: str | list[str] | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    lazy: bool = True
    options: EngineOptions = Field(default_factory=EngineOptions)

    def resolve_api_key(self, default_env: str | None = None) -> str | None:
        """The key from `api_key`, else from the `api_key_env` (or `default_env`) environment variable."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        env = self.api_key_env or default_env
        return os.environ.get(env) if env else None

    def public_dict(self) -> dict[str, Any]:
        """A description safe to write to disk: no key, no credentials in the endpoint, every SecretStr option as `**********`."""
        return {
            "name": self.name,
            "backend": self.backend,
            "model": self.model,
            "endpoint": [public_url(url) for url in self.endpoint] if isinstance(self.endpoint, list) else public_url(self.endpoint),
            "api_key_env": self.api_key_env,
            "lazy": self.lazy,
            "options": self.options.model_dump(mode="json"),
        }


_ENGINES: dict[str, EngineConfig] = {}


def register_engine(
    name: str,
    *,
    backend: str,
    model: str,
    endpoint: str | list[str] | None = None,
    api_key: str | None = None,
    api_key_env: str | None = None,
    lazy: bool = True,
    **backend_options: Any,
) -> EngineConfig:
    """Register (or replace) the engine `name`; its options are validated by its backend.

    `endpoint` may list several URLs (replicas): requests then go to the least busy one.
    """
    from chainette.plugins import get_plugins

    plugins = get_plugins()
    backend_name = plugins.resolve(backend)
    options_model = plugins.call(backend_name, "engine_options") or EngineOptions
    options = _validate_options(name, backend_name, options_model, backend_options)
    config = EngineConfig(
        name=name,
        backend=backend_name,
        model=model,
        endpoint=endpoint,
        api_key=SecretStr(api_key) if api_key is not None else None,
        api_key_env=api_key_env,
        lazy=lazy,
        options=options,
    )
    _ENGINES[name] = config
    return config


def engine_price(config: EngineConfig) -> tuple[float, float] | None:
    """USD per million input and output tokens: the engine's price options, else its backend's table, else None."""
    options = config.options
    if options.price_per_million_input is not None or options.price_per_million_output is not None:
        return (options.price_per_million_input or 0.0, options.price_per_million_output or 0.0)
    from chainette.plugins import get_plugins

    return get_plugins().call(config.backend, "model_price", config=config)


def _validate_options(name: str, backend: str, options_model: type[EngineOptions], given: dict[str, Any]) -> EngineOptions:
    valid = sorted(options_model.model_fields)
    unknown = [key for key in given if key not in options_model.model_fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Engine '{name}': backend '{backend}' has no option '{key}'.{hint} Valid options: {', '.join(valid)}.")
    try:
        return options_model(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Engine '{name}': invalid option for backend '{backend}': {problems}.") from None


def get_engine(name: str) -> EngineConfig:
    """The engine registered as `name`, or a ConfigError listing the registered ones."""
    try:
        return _ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(_ENGINES)) or "none"
        raise ConfigError(
            f"No engine named '{name}' is registered (registered: {known}). Call register_engine() or pass --engines FILE."
        ) from None


def registered_engines() -> dict[str, EngineConfig]:
    """A copy of the registry, by name."""
    return dict(_ENGINES)


def clear_engines() -> None:
    """Forget every registered engine (for tests and notebooks)."""
    _ENGINES.clear()


def load_engines_from_yaml(path: str | os.PathLike[str]) -> list[EngineConfig]:
    """Register every entry of `engines:` in a YAML file; errors name the file and line."""
    import yaml

    path = Path(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read engines file {path}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    entries = _engine_nodes(path, root)
    configs = []
    for node in entries:
        where = f"{path}:{node.start_mark.line + 1}"
        entry = yaml.safe_load(yaml.serialize(node))
        if not isinstance(entry, dict) or not {"name", "backend", "model"} <= entry.keys():
            raise ConfigError(f"{where}: each engine needs at least 'name', 'backend' and 'model'.")
        try:
            configs.append(register_engine(**entry))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return configs


def _engine_nodes(path: Path, root: Any) -> list[Any]:
    import yaml

    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "engines" and isinstance(value, yaml.SequenceNode):
                return list(value.value)
    raise ConfigError(f"{path}: expected a top-level 'engines:' list of mappings (name, backend, model, ...).")


def public_url(url: str | None) -> str | None:
    """`url` without `user:password@` credentials, safe to show or write."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
