"""A fingerprint of a Python callable's code, for a run's identity (an apply function's part of it).

It hashes the compiled code (bytecode, constants, names; nested functions and lambdas too), the default
arguments, the plain values (numbers, strings, containers of them) the function reads from its closure or its
module's globals, and the functions of its own module it calls, recursively. Unchanged code gives the same
fingerprint in every process of the same Python version; comments and line numbers do not count; a changed body,
constant or helper does. A different Python version compiles to other bytecode, so it counts as a change.
"""

from __future__ import annotations

from collections.abc import Iterator
import functools
import hashlib
import inspect
import types
from typing import Any

PLAIN = (str, bytes, int, float, complex, bool, type(None))


def code_fingerprint(fn: object) -> str:
    """A hex digest of `fn`'s code and what it reads (see the module's docstring)."""
    walk = _Walk()
    walk.callable(fn)
    return walk.digest.hexdigest()[:32]


class _Walk:
    """Hashes the text parts that identify a callable as it finds them, visiting each function once (recursion ends)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.seen: set[int] = set()

    def add(self, *parts: str) -> None:
        for part in parts:
            self.digest.update(part.encode("utf-8", "surrogatepass") + b"\0")

    def callable(self, fn: object) -> None:
        fn = inspect.unwrap(fn) if callable(fn) else fn
        if isinstance(fn, functools.partial):
            self.add("partial")
            self.callable(fn.func)
            self.value(fn.args)
            self.value(fn.keywords)
        elif isinstance(fn, types.MethodType):
            self.callable(fn.__func__)
            self.value(fn.__self__)
        elif isinstance(fn, types.FunctionType):
            self.function(fn)
        elif isinstance(call := inspect.getattr_static(type(fn), "__call__", None), types.FunctionType):
            self.add(f"instance {type(fn).__qualname__}")
            self.function(call)
            if hasattr(fn, "__dict__"):
                self.value(vars(fn))
        else:
            self.add(f"opaque {getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}")

    def function(self, fn: types.FunctionType) -> None:
        if id(fn.__code__) in self.seen:
            self.add(f"again {fn.__qualname__}")
            return
        self.seen.add(id(fn.__code__))
        self.add(f"function {fn.__qualname__}")
        self.code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(fn.__kwdefaults__)
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents)
            except ValueError:  # a cell not filled yet
                self.add("empty cell")
        for name in sorted(set(_global_names(fn.__code__))):
            if name in fn.__globals__:
                self.add(f"global {name}")
                found = fn.__globals__[name]
                if isinstance(found, types.FunctionType) and found.__module__ != fn.__module__:
                    self.add(f"{found.__module__}.{found.__qualname__}")
                else:
                    self.value(found)

    def code(self, code: types.CodeType) -> None:
        self.add(code.co_code.hex(), repr(code.co_names), repr(code.co_varnames))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const)
            else:
                self.value(const)

    def value(self, value: Any) -> None:
        """A value the code reads: plain data by its repr, containers item by item (sets sorted, so that hash
        randomisation does not count; a container holding itself once), functions by their code, anything else by
        its type only."""
        if isinstance(value, PLAIN):
            self.add(repr(value))
        elif isinstance(value, (tuple, list, dict)) and id(value) in self.seen:
            self.add("again")
        elif isinstance(value, (tuple, list)):
            self.seen.add(id(value))
            self.add(f"{type(value).__name__} {len(value)}")
            for item in value:
                self.value(item)
        elif isinstance(value, (set, frozenset)):
            self.add(f"set {sorted(repr(item) for item in value)}")
        elif isinstance(value, dict):
            self.seen.add(id(value))
            self.add(f"dict {len(value)}")
            for key in sorted(value, key=repr):
                self.value(key)
                self.value(value[key])
        elif isinstance(value, (types.FunctionType, functools.partial)):
            self.callable(value)
        else:
            self.add(f"object {type(value).__module__}.{type(value).__qualname__}")


def _global_names(code: types.CodeType) -> Iterator[str]:
    """The names `code` and the code nested in it look up (globals among them)."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)
