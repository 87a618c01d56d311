"""Finding backends and runners: the built-in default plugins plus entry points, loaded one by one.

A plugin that fails to import or register is recorded with its error and every other
backend keeps working. `CHAINETTE_LOAD_PLUGINS` (comma-separated backend or distribution
names; empty = none) restricts which entry points are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module, metadata
import os
from pathlib import Path
import threading
from typing import TYPE_CHECKING, Any, cast

import pluggy

from chainette import hookspecs
from chainette.errors import ConfigError
from chainette.pricing import Price, as_price
from chainette.sampling import DEFAULT_WIRE_NAMES, map_sampling

if TYPE_CHECKING:
    from pydantic import BaseModel
    import typer

    from chainette.batch import BatchClient
    from chainette.client import Client
    from chainette.engines import EngineConfig, EngineOptions
    from chainette.run.runner import Runner
    from chainette.sampling import SamplingParams

ENTRY_POINT_GROUP = "chainette.backends"
DEFAULT_PLUGINS = {"fake": "chainette.backends.fake"}


@dataclass
class PluginInfo:
    """One plugin as found: where it comes from, whether it loaded, and its kind: a "backend" (engines name it) or a
    "runner" (it runs whole chains elsewhere, `chainette run --on NAME`)."""

    name: str
    distribution: str
    version: str
    aliases: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    kind: str = "backend"

    @property
    def status(self) -> str:
        return "ok" if self.error is None else f"error: {self.error}"


class Plugins:
    """The plugin manager and what was found while loading it.

    Entry points are loaded on demand: resolving a backend imports only that backend's plugin,
    so one broken or slow plugin costs nothing to chains that do not use it.
    """

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("chainette")
        self.manager.add_hookspecs(hookspecs)
        self.found: dict[str, PluginInfo] = {}
        self.problems: list[PluginInfo] = []
        self._callers: dict[tuple[str, str], Any] = {}
        for name, module_name in DEFAULT_PLUGINS.items():
            self.register(name, import_module(module_name), "chainette-core", _version("chainette-core"))
        self._pending = _entry_points_by_name()

    def _load(self, name: str) -> None:
        """Import and register the entry point(s) named `name`, once; the first wins, the others are duplicates."""
        for entry_point in self._pending.pop(name, []):
            dist = entry_point.dist
            dist_name, version = (dist.name, dist.version) if dist else ("?", "?")
            if name in self.found:
                other = self.found[name].distribution
                self.problems.append(
                    PluginInfo(name, dist_name, version, error=f"duplicate backend name, already provided by {other}; ignored")
                )
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:  # a broken plugin must not break the others
                self._record_broken(name, dist_name, version, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.register(name, plugin, dist_name, version)

    def load_all(self) -> None:
        """Load every entry point not loaded yet."""
        for name in list(self._pending):
            self._load(name)

    def register(self, name: str, plugin: object, dist_name: str = "local", version: str = "0") -> None:
        """Register `plugin` (a module or object of @hookimpl functions) as backend `name`; failures are recorded."""
        self._callers.clear()
        try:
            self.manager.register(plugin, name=name)
        except Exception as exc:
            self._record_broken(name, dist_name, version, f"registration failed: {exc}")
            return
        hooks = sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])
        unknown = [h for h in hooks if not hasattr(hookspecs, h)]
        info = PluginInfo(name, dist_name, version, hooks=hooks)
        if not unknown and "backend_aliases" in hooks:
            info.aliases = sorted(self.call(name, "backend_aliases") or [])
        if "make_runner" in hooks and "make_client" not in hooks:
            info.kind = "runner"
        if unknown:
            self.manager.unregister(plugin)
            info.error = f"unknown hook(s) {', '.join(unknown)}; see chainette.hookspecs"
        elif "make_client" not in hooks and info.kind == "backend":
            info.error = "it implements no make_client hook"
        self.found[name] = info

    def _record_broken(self, name: str, dist_name: str, version: str, error: str) -> None:
        self.found[name] = PluginInfo(name, dist_name, version, error=error)

    def all(self) -> list[PluginInfo]:
        """Every backend found, broken ones and duplicates included, sorted by name."""
        self.load_all()
        return sorted([*self.found.values(), *self.problems], key=lambda info: info.name)

    def resolve(self, backend: str) -> str:
        """The canonical name of a working backend (given by name or alias), or a ConfigError that says what to install."""
        self._load(backend)
        name = backend if backend in self.found else self._aliased(backend)
        info = self.found.get(name)
        if info is not None and info.kind == "runner":
            raise ConfigError(
                f"'{name}' ({info.distribution}) is a runner, not a backend: it runs a whole chain (chainette run --on {name}, "
                f"chain.run(on='{name}')); give an engine one of the backends `chainette backends list` shows."
            )
        if info is not None and info.error is None:
            return name
        if info is not None:
            raise ConfigError(f"Backend '{name}' ({info.distribution} {info.version}) is installed but failed to load: {info.error}")
        working = ", ".join(n for n, i in sorted(self.found.items()) if i.error is None and i.kind == "backend")
        raise ConfigError(
            f"Unknown backend '{backend}'. Installed backends: {working}. A backend is a distribution of its own, "
            f"usually named chainette-{backend} (pip install chainette-{backend}); `chainette backends list` shows what is installed."
        )

    def runner(self, target: str) -> Runner:
        """The runner for `target` (`ray`, `ray://HOST:PORT`): the runner plugin named by its scheme; a ConfigError that
        says what to install when none is, or what failed when it is broken or refuses the target."""
        name = target.split("://", 1)[0].split("?", 1)[0]
        self._load(name)
        info = self.found.get(name)
        if info is not None and info.error is not None:
            raise ConfigError(f"Runner '{name}' ({info.distribution} {info.version}) is installed but failed to load: {info.error}")
        if info is None or info.kind != "runner":
            runners = ", ".join(i.name for i in self.all() if i.kind == "runner" and i.error is None) or "none"
            raise ConfigError(
                f"No runner named '{name}' is installed (--on {target}; installed runners: {runners}). A runner is a distribution of "
                f"its own: pip install chainette-{name}, then `chainette backends list` shows it; leave out --on (on=) to run here."
            )
        runner = self.call(name, "make_runner", target=target)
        if runner is None:
            raise ConfigError(f"Runner '{name}' does not run on '{target}': see its documentation for the targets it accepts.")
        return cast("Runner", runner)

    def _aliased(self, alias: str) -> str:
        """The backend that declares `alias` (every plugin is loaded to find it), else `alias` itself."""
        self.load_all()
        return next((info.name for info in self.found.values() if alias in info.aliases), alias)

    def hooks(self, backend: str) -> BackendHooks:
        """The typed hooks of the plugin that provides `backend` (a canonical name, see `resolve`)."""
        return BackendHooks(self, backend)

    def implements(self, backend: str, hook: str) -> bool:
        """Whether the plugin that provides `backend` has an implementation of `hook`."""
        plugin = self.manager.get_plugin(backend)
        return plugin is not None and any(caller.name == hook for caller in self.manager.get_hookcallers(plugin) or [])

    def call(self, backend: str, hook: str, **kwargs: Any) -> Any:
        """Call `hook` on the one plugin that provides `backend` (returns its result, or None if it lacks the hook)."""
        key = (backend, hook)
        caller = self._callers.get(key)
        if caller is None:
            own = self.manager.get_plugin(backend)
            others = [p for p in self.manager.get_plugins() if p is not own]
            caller = self.manager.subset_hook_caller(hook, remove_plugins=others)
            self._callers[key] = caller
        return caller(**kwargs)

    def add_commands(self, app: typer.Typer) -> None:
        """Let every plugin add its commands to the CLI; a plugin whose hook fails is recorded, the others still run."""
        self.load_all()
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:
                info = self.found.get(impl.plugin_name)
                if info is not None:
                    info.error = f"register_commands failed: {type(exc).__name__}: {exc}"


class BackendHooks:
    """One backend's hooks as typed calls; a hook the backend lacks returns None (or does nothing)."""

    def __init__(self, plugins: Plugins, backend: str):
        self.plugins = plugins
        self.backend = backend

    def implements(self, hook: str) -> bool:
        return self.plugins.implements(self.backend, hook)

    def engine_options(self) -> type[EngineOptions] | None:
        return cast("type[EngineOptions] | None", self.plugins.call(self.backend, "engine_options"))

    def ensure_running(self, config: EngineConfig[EngineOptions], run_dir: Path | None, cancelled: threading.Event) -> str | None:
        return cast("str | None", self.plugins.call(self.backend, "ensure_running", config=config, run_dir=run_dir, cancelled=cancelled))

    def server_key(self, config: EngineConfig[EngineOptions]) -> str | None:
        return cast("str | None", self.plugins.call(self.backend, "server_key", config=config))

    def server_devices(self, config: EngineConfig[EngineOptions]) -> list[str] | None:
        return cast("list[str] | None", self.plugins.call(self.backend, "server_devices", config=config))

    def make_client(self, config: EngineConfig[EngineOptions]) -> Client:
        """The backend's client for `config`; a ConfigError if the backend returns none."""
        client = self.plugins.call(self.backend, "make_client", config=config)
        if client is None:
            raise ConfigError(f"Backend '{self.backend}' returned no client for engine '{config.name}'.")
        return cast("Client", client)

    def make_batch_client(self, config: EngineConfig[EngineOptions], run_dir: Path | None) -> BatchClient:
        """The backend's batch client for `config`; a ConfigError naming what to do when the backend has none."""
        client = self.plugins.call(self.backend, "make_batch_client", config=config, run_dir=run_dir)
        if client is None:
            raise no_batch_client(config)
        return cast("BatchClient", client)

    def translate_sampling(self, config: EngineConfig[EngineOptions], sampling: SamplingParams) -> dict[str, Any]:
        return cast("dict[str, Any]", self.plugins.call(self.backend, "translate_sampling", config=config, sampling=sampling))

    def check_output_model(self, config: EngineConfig[EngineOptions], model: type[BaseModel]) -> None:
        self.plugins.call(self.backend, "check_output_model", config=config, model=model)

    def check_input_media(self, config: EngineConfig[EngineOptions], fields: dict[str, str]) -> None:
        self.plugins.call(self.backend, "check_input_media", config=config, fields=fields)

    def model_price(self, config: EngineConfig[EngineOptions]) -> Price | None:
        return as_price(self.plugins.call(self.backend, "model_price", config=config))

    def stop_engine(self, config: EngineConfig[EngineOptions]) -> str | None:
        """The backend's note when what the engine used keeps running, else None (see the hook)."""
        notes = self.plugins.call(self.backend, "stop_engine", config=config) or []
        return next((str(note) for note in notes if note), None)


def no_batch_client(config: EngineConfig[EngineOptions]) -> ConfigError:
    """The error for an engine that asks for batch jobs its backend cannot run."""
    return ConfigError(
        f"Engine '{config.name}': backend '{config.backend}' cannot run batch jobs. Drop batch=True from the engine, "
        "or use a backend that can, such as openai."
    )


def translate_sampling(config: EngineConfig[EngineOptions], sampling: SamplingParams | None) -> dict[str, Any]:
    """The wire fields for `sampling` on `config`'s engine: its backend's translate_sampling hook, else DEFAULT_WIRE_NAMES."""
    if sampling is None:
        return {}
    hooks = get_plugins().hooks(config.backend)
    if hooks.implements("translate_sampling"):
        return hooks.translate_sampling(config, sampling)
    return map_sampling(sampling, DEFAULT_WIRE_NAMES, engine=config.name)


def _entry_points_by_name() -> dict[str, list[metadata.EntryPoint]]:
    """The group's entry points by name, keeping only those `CHAINETTE_LOAD_PLUGINS` allows."""
    value = os.environ.get("CHAINETTE_LOAD_PLUGINS")
    allowed = None if value is None else {part.strip() for part in value.split(",") if part.strip()}
    by_name: dict[str, list[metadata.EntryPoint]] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist_name = entry_point.dist.name if entry_point.dist else ""
        if allowed is None or entry_point.name in allowed or dist_name in allowed:
            by_name.setdefault(entry_point.name, []).append(entry_point)
    return by_name


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugins, loaded on first use."""
    return Plugins()


def reset_plugins() -> None:
    """Forget loaded plugins so that the next use loads them again (for tests)."""
    get_plugins.cache_clear()
