"""Finding the user's chain from a `path/to/file.py:attr`, `package.module:attr` or `chain.yaml` reference."""

from __future__ import annotations

from collections.abc import Callable
import importlib
import importlib.machinery
import importlib.util
from pathlib import Path
import site
import sys
from types import ModuleType
from typing import TypeVar

from chainette.chain import Chain
from chainette.errors import ChainetteError, ConfigError, raised_at

T = TypeVar("T")


def load_chain(reference: str) -> Chain:
    """The Chain named by `reference`; `:attr` may be left out when the module holds exactly one Chain.

    A path ending in .yaml or .yml is a chain file (chainette.chainfile).
    """
    if reference.endswith((".yaml", ".yml")):
        from chainette.chainfile import load_chain_file

        return load_chain_file(reference)
    target, _, attr = reference.partition(":")
    module = _import_file(Path(target)) if target.endswith(".py") else _import_module(_module_name(target))
    chains = {name: value for name, value in vars(module).items() if isinstance(value, Chain)}
    if attr:
        value = getattr(module, attr, None)
        if not isinstance(value, Chain):
            found = ", ".join(sorted(chains)) or "none"
            if not hasattr(module, attr):
                raise ConfigError(f"{target} has no Chain named '{attr}' (Chains found: {found}).")
            kind = f"the class {value.__name__}" if isinstance(value, type) else f"of type {type(value).__name__}"
            raise ConfigError(f"{target}:{attr} is {kind}, not a Chain (Chains found: {found}).")
        return value
    if len(chains) != 1:
        found = ", ".join(sorted(chains)) or "none"
        raise ConfigError(f"{target} holds {len(chains)} Chains ({found}); name one: {target}:NAME.")
    return next(iter(chains.values()))


FORMS = "path/to/file.py:attr, package.module:attr or chain.yaml"
CHAIN_FILE = "__chainette_chain_file__"
"""Set on the module of each chain file loaded: another chain file of the same name may replace it."""


def _module_name(target: str) -> str:
    """`target` as a module name; ConfigError for an empty one, or a path to something other than a .py file."""
    if not target:
        raise ConfigError(f"No chain given: name it as {FORMS}.")
    if "/" in target or "\\" in target or Path(target).is_file():
        raise ConfigError(f"Chain '{target}' is neither a .py nor a .yaml file: name it as {FORMS} (rename the file if it holds Python).")
    return target


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"Chain file {path} does not exist.")
    _refuse_taken_name(path)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Chain file {path} cannot be imported as a Python module: name it as {FORMS}.")
    loader = spec.loader
    module = importlib.util.module_from_spec(spec)
    setattr(module, CHAIN_FILE, True)
    sys.modules[path.stem] = module
    _run_user_code(lambda: loader.exec_module(module), str(path), [path.resolve().parent])
    return module


def _refuse_taken_name(path: Path) -> None:
    """ConfigError when the chain file is named like a module of the standard library, one imported already (not
    another chain file) or one installed: it is imported under its name, so it would stand in for that module
    everywhere in the run."""
    name, module = path.stem, sys.modules.get(path.stem)
    if name in sys.stdlib_module_names or (module is not None and not hasattr(module, CHAIN_FILE)):
        where = getattr(module, "__file__", None) or "the standard library"
    elif (installed := importlib.machinery.PathFinder.find_spec(name, _installed_places())) is not None and installed.origin:
        where = f"installed at {installed.origin}"  # a module or package, not a bare folder some distribution left there
    else:
        return
    raise ConfigError(
        f"Chain file {path} is named like the Python module '{name}' ({where}): loading it would stand in for that "
        f"module in the whole run. Rename the file (say, to {name}_chain.py)."
    )


def _installed_places() -> list[str]:
    """The folders installed distributions' modules are imported from (site-packages, the user's included)."""
    places = site.getsitepackages()
    return [*places, site.getusersitepackages()] if site.ENABLE_USER_SITE else places


def _import_module(name: str) -> ModuleType:
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        return _run_user_code(lambda: importlib.import_module(name), name, [])
    except ModuleNotFoundError as exc:
        raise ConfigError(f"Cannot import chain module '{name}': {exc}. Name the chain as {FORMS}.") from None


def _run_user_code(load: Callable[[], T], where: str, roots: list[Path]) -> T:
    """`load()`; any other failure than a ChainetteError or a missing module is a ConfigError naming the user's line (under `roots`)."""
    try:
        return load()
    except (ChainetteError, ModuleNotFoundError):
        raise
    except Exception as exc:
        raise ConfigError(f"Loading {where} failed{raised_at(exc, roots)}: {type(exc).__name__}: {exc}") from exc
