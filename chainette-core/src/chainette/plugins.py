"""Finding backends: the built-in default plugins plus entry points, loaded one by one.

A plugin that fails to import or register is recorded with its error and every other
backend keeps working. `CHAINETTE_LOAD_PLUGINS` (comma-separated backend or distribution
names; empty = none) restricts which entry points are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module, metadata
import os
from typing import Any

import pluggy

from chainette import hookspecs
from chainette.errors import ConfigError

ENTRY_POINT_GROUP = "chainette.backends"
ALIASES = {"vllm_api": "vllm", "ollama_api": "ollama"}
FIRST_PARTY = {"openai": "chainette-openai", "vllm": "chainette-vllm", "ollama": "chainette-ollama"}
DEFAULT_PLUGINS = {"fake": "chainette.backends.fake"}


@dataclass
class PluginInfo:
    """One backend as found: where it comes from and whether it loaded."""

    name: str
    distribution: str
    version: str
    aliases: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

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
        aliases = sorted(alias for alias, target in ALIASES.items() if target == name)
        info = PluginInfo(name, dist_name, version, aliases=aliases, hooks=hooks)
        if unknown:
            self.manager.unregister(plugin)
            info.error = f"unknown hook(s) {', '.join(unknown)}; see chainette.hookspecs"
        elif "make_client" not in hooks:
            info.error = "it implements no make_client hook"
        self.found[name] = info

    def _record_broken(self, name: str, dist_name: str, version: str, error: str) -> None:
        self.found[name] = PluginInfo(name, dist_name, version, error=error)

    def all(self) -> list[PluginInfo]:
        """Every backend found, broken ones and duplicates included, sorted by name."""
        self.load_all()
        return sorted([*self.found.values(), *self.problems], key=lambda info: info.name)

    def resolve(self, backend: str) -> str:
        """The canonical name of a working backend, or a ConfigError that says what to install."""
        name = ALIASES.get(backend, backend)
        self._load(name)
        info = self.found.get(name)
        if info is not None and info.error is None:
            return name
        if info is not None:
            raise ConfigError(f"Backend '{name}' ({info.distribution} {info.version}) is installed but failed to load: {info.error}")
        self.load_all()
        working = ", ".join(n for n, i in sorted(self.found.items()) if i.error is None)
        hint = f" Install it with: pip install {FIRST_PARTY[name]}" if name in FIRST_PARTY else ""
        raise ConfigError(f"Unknown backend '{backend}'. Installed backends: {working}.{hint}")

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

    def add_commands(self, app: Any) -> None:
        """Let every plugin add its commands to the CLI; a plugin whose hook fails is recorded, the others still run."""
        self.load_all()
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:
                info = self.found.get(impl.plugin_name)
                if info is not None:
                    info.error = f"register_commands failed: {type(exc).__name__}: {exc}"


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
