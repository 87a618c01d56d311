"""Engines: a named backend + model + options, registered by name and used by steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
import difflib
import os
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from chainette.errors import ConfigError, describe_validation_error
from chainette.plugins import get_plugins
from chainette.pricing import Price
from chainette.secrets import clean_key, engine_secrets, public_url
from chainette.yamlfile import Loc, YamlFile, read_yaml


class EngineOptions(BaseModel):
    """Options every backend accepts. A backend subclasses this to add its own and change defaults.

    An option that can hold a secret is typed `SecretStr` (also inside containers, e.g. `dict[str, SecretStr]`):
    its value is then masked in graph.json, `chainette inspect` and repr, and redacted from errors (chainette.secrets).

    Every option is part of the response cache's keys (chainette.cache) unless `cache_neutral` names it: a backend
    adds there the options that cannot change an answer (ports, timeouts, environment variables).
    `same_error_advice` is the backend's own advice for a step stopped because its first rows all failed alike
    (chainette.policy.SameErrorStop): which of its options to look at first. `key_env` is the environment variable the
    backend reads a key from when an engine names none (api_key_env), so that its value is redacted too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    same_error_advice: ClassVar[str] = ""
    key_env: ClassVar[str | None] = None
    cache_neutral: ClassVar[frozenset[str]] = frozenset(
        {
            "max_concurrency",
            "adaptive_concurrency",
            "timeout",
            "max_retries",
            "retry_budget",
            "requests_per_minute",
            "tokens_per_minute",
            "price_per_million_input",
            "price_per_million_output",
            "price_per_million_cache_read",
            "price_per_million_cache_write",
            "cache",
            "batch",
            "batch_poll_seconds",
        }
    )

    max_concurrency: int = Field(16, ge=1, description="Requests in flight at once for this engine, at most.")
    adaptive_concurrency: bool = Field(
        True,
        description="Narrow the requests in flight on 429s, overload answers and timeouts, widen them back after (False: always max_concurrency).",
    )
    timeout: float = Field(120.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(6, ge=0, description="Retries of a request after a transient failure.")
    retry_budget: float = Field(600.0, gt=0, description="Seconds a request may spend retrying, waits included.")
    requests_per_minute: int | None = Field(None, ge=1, description="Request rate limit (token bucket).")
    tokens_per_minute: int | None = Field(None, ge=1, description="Token rate limit (estimated before, corrected after each request).")
    price_per_million_input: float | None = Field(None, ge=0, description="USD per million input tokens, for cost estimates.")
    price_per_million_output: float | None = Field(None, ge=0, description="USD per million output tokens, for cost estimates.")
    price_per_million_cache_read: float | None = Field(
        None, ge=0, description="USD per million input tokens read from the prompt cache (None: the input price)."
    )
    price_per_million_cache_write: float | None = Field(
        None, ge=0, description="USD per million input tokens written to the prompt cache (None: the input price)."
    )
    cache: bool = Field(True, description="Answer from the response cache, and store answers there (see docs/cache.md).")
    batch: bool = Field(False, description="Answer the steps as offline batch jobs, where the backend can (see docs/batch.md).")
    batch_poll_seconds: float = Field(60.0, gt=0, description="The longest wait between two looks at a batch's state.")


OptionsT = TypeVar("OptionsT", bound=EngineOptions, covariant=True)


class EngineConfig(BaseModel, Generic[OptionsT]):
    """A registered engine. A backend annotates the configs it receives as `EngineConfig[ItsOptions]`.

    `endpoint` is the one URL a backend talks to (None: the backend decides, e.g. it starts a server);
    an engine registered with several URLs keeps the others in `replicas`, and the core gives each
    backend hook a config per URL, so a backend never sees more than one. `api_key` is a SecretStr:
    it is never printed or written anywhere; nor are the credentials and query-string values of the URLs.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    backend: str
    model: str
    endpoint: str | None = None
    replicas: tuple[str, ...] = ()
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    lazy: bool = True
    options: OptionsT

    @property
    def urls(self) -> list[str | None]:
        """Every URL requests may go to: the endpoint and its replicas ([None] when the backend decides)."""
        return [self.endpoint, *self.replicas]

    def for_url(self, url: str | None) -> EngineConfig[OptionsT]:
        """This config aimed at `url` alone, as a backend hook receives it."""
        return self.model_copy(update={"endpoint": url, "replicas": ()})

    def resolve_api_key(self, default_env: str | None = None) -> str | None:
        """The key from `api_key`, else from the `api_key_env` (or the backend's `default_env`) environment variable,
        stripped of surrounding whitespace; None without one. A ConfigError names the variable when `api_key_env`'s is
        unset or blank (a missing `default_env` is no error: a local server needs no key) or the key is unusable."""
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        if self.api_key_env:
            key = self._env_key(self.api_key_env)
            if key is None:
                state = "empty" if self.api_key_env in os.environ else "not set"
                raise ConfigError(
                    f"Engine '{self.name}': api_key_env names the environment variable {self.api_key_env}, which is {state}. "
                    f"Set it to the API key before the run (export {self.api_key_env}=...), or remove api_key_env if the "
                    "engine's server needs no key."
                )
            return key
        return self._env_key(default_env) if default_env else None

    def _env_key(self, variable: str) -> str | None:
        source = f"Engine '{self.name}': the environment variable {variable}"
        return clean_key(os.environ.get(variable, ""), source) or None

    def public_dict(self) -> dict[str, Any]:
        """A description safe to write to disk: no key, no credentials in the endpoint, every SecretStr option as `**********`."""
        shown = [public_url(url) for url in self.urls]
        return {
            "name": self.name,
            "backend": self.backend,
            "model": self.model,
            "endpoint": shown if self.replicas else shown[0],
            "api_key_env": self.api_key_env,
            "lazy": self.lazy,
            "options": self.options.model_dump(mode="json"),
        }


_ENGINES: dict[str, EngineConfig[EngineOptions]] = {}


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
) -> EngineConfig[EngineOptions]:
    """Register (or replace) the engine `name`; its options are validated by its backend.

    `endpoint` may list several URLs (replicas): requests then go to the least busy one.
    """
    check_engine_name(name)
    plugins = get_plugins()
    backend_name = plugins.resolve(backend)
    options_model = plugins.hooks(backend_name).engine_options() or EngineOptions
    options = _validate_options(name, backend_name, options_model, backend_options)
    urls = [endpoint] if isinstance(endpoint, str) or endpoint is None else list(endpoint)
    if not urls:
        raise ConfigError(f"Engine '{name}': endpoint is an empty list; give one URL, several, or none.")
    config: EngineConfig[EngineOptions] = EngineConfig(
        name=name,
        backend=backend_name,
        model=model,
        endpoint=urls[0],
        replicas=tuple(urls[1:]),
        api_key=_secret_key(name, api_key),
        api_key_env=api_key_env,
        lazy=lazy,
        options=options,
    )
    _ENGINES[name] = config
    return config


def _secret_key(engine: str, api_key: str | None) -> SecretStr | None:
    """`api_key` stripped (see chainette.secrets.clean_key) as a SecretStr; None for no key or a blank one."""
    key = None if api_key is None else clean_key(api_key, f"Engine '{engine}': api_key")
    return SecretStr(key) if key else None


def check_keys(engines: Mapping[str, EngineConfig[EngineOptions]]) -> None:
    """Refuse, before any request, an engine whose `api_key_env` variable is unset or blank, or whose key (also one from
    its backend's default variable, `key_env`) is unusable."""
    for config in engines.values():
        config.resolve_api_key(default_env=config.options.key_env)


def check_engine_name(name: object) -> None:
    """ConfigError (at the key `name`) for a name that cannot be part of a file name: a backend may name files after its
    engines (a vLLM server's log is vllm-NAME.log), so `/`, `\\`, control characters, `.` and `..` are refused."""
    if isinstance(name, str) and name not in ("", ".", "..") and not any(c in "/\\" or not c.isprintable() for c in name):
        return
    raise ConfigError(
        f"Engine name {name!r} cannot be used: engine names become parts of file names (a vLLM server's log is "
        "vllm-NAME.log), so give a name without '/', '\\' or control characters, such as llm or llama-3.1-8b.",
        ("name",),
    )


def engine_price(config: EngineConfig[EngineOptions]) -> Price | None:
    """The engine's price: its price options (input and output where it sets either), over its backend's table; None
    when neither gives one."""
    options = config.options
    if options.price_per_million_input is not None or options.price_per_million_output is not None:
        base: Price | None = Price(options.price_per_million_input or 0.0, options.price_per_million_output or 0.0)
    else:
        base = get_plugins().hooks(config.backend).model_price(config)
    if base is None:
        return None
    read, write = options.price_per_million_cache_read, options.price_per_million_cache_write
    return replace(base, cache_read=base.cache_read if read is None else read, cache_write=base.cache_write if write is None else write)


def _validate_options(name: str, backend: str, options_model: type[EngineOptions], given: dict[str, Any]) -> EngineOptions:
    """`given` as an `options_model`, or a ConfigError whose `loc` is the option at fault (for a typo, naming the closest valid one)."""
    valid = sorted(options_model.model_fields)
    unknown = [key for key in given if key not in options_model.model_fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        message = f"Engine '{name}': backend '{backend}' has no option '{key}'.{hint} Valid options: {', '.join(valid)}."
        raise ConfigError(message, (key,))
    try:
        return options_model(**given)
    except ValidationError as exc:
        message = f"Engine '{name}': invalid option for backend '{backend}': {describe_validation_error(exc)}."
        raise ConfigError(message, tuple(exc.errors()[0]["loc"])) from None


def get_engine(name: str) -> EngineConfig[EngineOptions]:
    """The engine registered as `name`, or a ConfigError listing the registered ones."""
    try:
        return _ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(_ENGINES)) or "none"
        raise ConfigError(
            f"No engine named '{name}' is registered (registered: {known}). Call register_engine() or pass --engines FILE."
        ) from None


def registered_engines() -> dict[str, EngineConfig[EngineOptions]]:
    """A copy of the registry, by name."""
    return dict(_ENGINES)


def registered_secrets() -> frozenset[str]:
    """The secret values of every registered engine (see chainette.secrets.engine_secrets)."""
    return frozenset().union(*(engine_secrets(config) for config in _ENGINES.values()))


def clear_engines() -> None:
    """Forget every registered engine (for tests and notebooks)."""
    _ENGINES.clear()


class EngineSpec(BaseModel):
    """An engine declared in YAML: the arguments of `register_engine`; keys beyond these are backend options."""

    model_config = ConfigDict(extra="allow")

    name: str
    backend: str
    model: str
    endpoint: str | list[str] | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    lazy: bool = True


def register_spec(spec: EngineSpec) -> EngineConfig[EngineOptions]:
    """Register the engine `spec` declares; a ConfigError's `loc` is the key at fault (backend, an option) when known."""
    try:
        get_plugins().resolve(spec.backend)
    except ConfigError as exc:
        raise ConfigError(str(exc), ("backend",)) from None
    return register_engine(
        spec.name,
        backend=spec.backend,
        model=spec.model,
        endpoint=spec.endpoint,
        api_key=None if spec.api_key is None else spec.api_key.get_secret_value(),
        api_key_env=spec.api_key_env,
        lazy=spec.lazy,
        **(spec.model_extra or {}),
    )


def load_engines_from_yaml(
    path: str | os.PathLike[str], *, used: Mapping[str, Sequence[str]] | None = None
) -> list[EngineConfig[EngineOptions]]:
    """Register every entry of `engines:` in a YAML file; a ConfigError names the file and the line of the entry at fault.

    With `used` (engine name -> the ids of the steps using it), the file must define exactly those engines: an
    engine no step uses (a misspelt name, most often) or a step's engine the file leaves out is a ConfigError.
    """
    source = read_yaml(path)
    entries = source.data.get("engines") if isinstance(source.data, dict) else None
    if not isinstance(entries, list):
        raise source.at(("engines",), "expected a top-level 'engines:' list of mappings (name, backend, model, ...).")
    if used is not None:
        _check_names(source, entries, used)
    return [_register_entry(source, entry, ("engines", index)) for index, entry in enumerate(entries)]


def _check_names(source: YamlFile, entries: list[Any], used: Mapping[str, Sequence[str]]) -> None:
    """Refuse an engines file that defines an engine no step uses, or leaves out one a step uses."""
    defined = {entry.get("name"): index for index, entry in enumerate(entries) if isinstance(entry, dict)}
    rule = "With --engines, the file defines every engine the chain's steps use, and only those."
    for name, index in defined.items():
        if name not in used:
            hint = _closest(str(name), [n for n in used if n not in defined])
            message = f"engine '{name}' is used by no step (the steps use: {', '.join(sorted(used))}).{hint} {rule}"
            raise source.at(("engines", index, "name"), message)
    for name, steps in sorted(used.items()):
        if name not in defined:
            hint = _closest(name, [str(n) for n in defined])
            listed = ", ".join(f"'{step}'" for step in steps)
            who = f"step {listed} uses" if len(steps) == 1 else f"steps {listed} use"
            message = f"{source.path}: {who} engine '{name}', which this file does not define.{hint} {rule}"
            raise ConfigError(message)


def _closest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _register_entry(source: YamlFile, entry: Any, loc: Loc) -> EngineConfig[EngineOptions]:
    spec = source.validate(EngineSpec, entry, loc)
    try:
        return register_spec(spec)
    except ConfigError as exc:
        raise source.at(loc, str(exc)) from None
