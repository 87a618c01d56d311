"""YAML files that remember the line of every key and list item, so that errors name file:line.

`read_yaml(path)` parses a file; `YamlFile.validate(model, data, loc)` checks part of it against a
pydantic model and turns the first problem into a ConfigError naming the line, the key path and,
for an unknown key, the closest valid one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import difflib
import os
from pathlib import Path
import typing
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from chainette.errors import ConfigError

if TYPE_CHECKING:
    from yaml import MarkedYAMLError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class YamlFile:
    """A parsed YAML file: its data, and the 1-based line of each key path (`("steps", 0, "id")`)."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        """The line of `loc`, or of its nearest ancestor the file holds (1 for the document)."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def error(self, loc: Loc, problem: str) -> ConfigError:
        """`path:line: key.path: problem` as a ConfigError."""
        where = f"{format_loc(loc)}: " if loc else ""
        return ConfigError(f"{self.path}:{self.line(loc)}: {where}{problem}")

    def at(self, loc: Loc, message: str) -> ConfigError:
        """`path:line: message` as a ConfigError, for messages that already say what they are about."""
        return ConfigError(f"{self.path}:{self.line(loc)}: {message}")

    def validate(self, model: type[M], data: Any, loc: Loc = ()) -> M:
        """`data` (found at `loc`) as a `model`, or a ConfigError for its first problem (missing keys last:
        an unknown key next to a missing one is usually its typo)."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            first = min(errors, key=lambda e: (e["type"] == "missing", self.line(loc + tuple(e["loc"]))))
            raise self._problem(model, data, loc, first) from None

    def _known(self, loc: Loc) -> Loc:
        """The longest part of `loc` the file holds (pydantic adds union members' names to locations)."""
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return loc

    def _problem(self, model: type[BaseModel], data: Any, loc: Loc, error: ErrorDetails) -> ConfigError:
        inner = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            valid = sorted(_model_at(model, inner[:-1]).model_fields)
            close = difflib.get_close_matches(str(inner[-1]), valid, n=1)
            hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}."
            return self.error(loc + inner, f"unknown key; {hint}")
        if error["type"] == "missing":
            return self.error(loc + inner[:-1], f"missing required key '{inner[-1]}'{_typo_hint(model, data, inner)}.")
        given = error.get("input")
        if _is_secret(model, inner):
            quote = "; quote it in YAML ('...'), or better, keep it in an environment variable" if error["type"] == "string_type" else ""
            got = f" (the value is not shown: it is secret{quote})"
        else:
            got = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
        return self.error(self._known(loc + inner), f"{error['msg']}{got}.")


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel]:
    """The model a key path inside `model` points into (list indexes skipped)."""
    for part in loc:
        if isinstance(part, str) and part in model.model_fields:
            model = _find_model(model.model_fields[part].annotation) or model
    return model


def _is_secret(model: type[BaseModel], loc: Loc) -> bool:
    """Whether a key path inside `model` goes through a field declared secret (a `SecretStr` in its type)."""
    for part in loc:
        field_info = model.model_fields.get(part) if isinstance(part, str) else None
        if field_info is None:
            continue
        if _mentions(field_info.annotation, SecretStr):
            return True
        model = _find_model(field_info.annotation) or model
    return False


def _mentions(annotation: Any, wanted: type) -> bool:
    """Whether the type `annotation` is `wanted` or holds it (`wanted | None`, `dict[str, wanted]`, ...)."""
    return annotation is wanted or any(_mentions(arg, wanted) for arg in typing.get_args(annotation))


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _typo_hint(model: type[BaseModel], data: Any, loc: Loc) -> str:
    """' (is 'backnd' a typo?)' when the mapping holding the missing key has an unknown key close to it."""
    for part in loc[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return ""
    if not isinstance(data, dict):
        return ""
    unknown = [str(key) for key in data if key not in _model_at(model, loc[:-1]).model_fields]
    close = difflib.get_close_matches(str(loc[-1]), unknown, n=1)
    return f" (is '{close[0]}' a typo?)" if close else ""


def format_loc(loc: Loc) -> str:
    """`("steps", 1, "user_prompt")` as `steps[1].user_prompt`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def read_yaml(path: str | os.PathLike[str]) -> YamlFile:
    """Parse `path`; a ConfigError names the file and line of a byte YAML cannot hold, a syntax error or a duplicate key."""
    import yaml
    from yaml.reader import ReaderError

    path = Path(path)
    text = _read_text(path)
    try:
        loader = yaml.SafeLoader(text)
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{path}:{line}: the character #x{exc.character:04x} is not allowed in YAML; remove it.") from None
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        if node is not None:
            _check_size(path, node)
            _index(path, node, (), lines)
        return YamlFile(path, loader.construct_document(node) if node is not None else None, lines)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(path, exc) from None
    except RecursionError:
        line = loader.get_mark().line + 1
        raise ConfigError(f"{path}:{line}: the YAML is nested too deep to read; a chain or engines file needs a few levels.") from None
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    """The file's text; a ConfigError when it cannot be read or is not UTF-8 (naming the line of the first bad byte)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: the file is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None


MAX_NODES = 100_000
"""The most values (keys, scalars, lists, mappings) a YAML file may expand to once its aliases are followed."""


def _check_size(path: Path, root: Any) -> None:
    """ConfigError naming the line when the document, its aliases followed, holds more than MAX_NODES values or an
    alias inside its own anchor: a few hundred bytes of nested aliases ("billion laughs") can otherwise expand to
    billions of values. Each node is counted once, so the check takes the time of the file's own size."""
    sizes = _expanded_sizes(path, root)
    if sizes[id(root)] <= MAX_NODES:
        return
    node = root
    while (child := next((c for c in _children(node) if sizes[id(c)] > MAX_NODES), None)) is not None:
        node = child
    raise ConfigError(
        f"{path}:{node.start_mark.line + 1}: this value expands, through its aliases (*name), to more than {MAX_NODES:,} "
        "values, more than a chain or engines file ever needs; write the values out, or use fewer nested aliases."
    )


def _expanded_sizes(path: Path, root: Any) -> dict[int, int]:
    """The number of values each node expands to (capped at MAX_NODES + 1), by node id; ConfigError for an alias
    used inside its own anchor, which expands forever. Iterative, so that deep documents need no deep stack."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(child)] for child in _children(node)), MAX_NODES + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise ConfigError(
                f"{path}:{node.start_mark.line + 1}: this value holds an alias to itself (*name inside its own &name), "
                "which would repeat it forever; remove the alias."
            )
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    return sizes


def _children(node: Any) -> list[Any]:
    """The nodes directly inside `node`: a mapping's keys and values, a sequence's items, nothing for a scalar."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _syntax_error(path: Path, exc: MarkedYAMLError) -> ConfigError:
    """`path:line: invalid YAML: problem` for a parser, scanner or constructor error, at the line of its mark."""
    mark = exc.problem_mark or exc.context_mark
    context = f" ({exc.context} on line {exc.context_mark.line + 1})" if exc.context and exc.context_mark and exc.problem else ""
    line = mark.line + 1 if mark else 1
    return ConfigError(
        f"{path}:{line}: invalid YAML: {exc.problem or exc.context}{context}. Fix the syntax (indentation, ':' after keys, quotes)."
    )


def _index(path: Path, node: Any, loc: Loc, lines: dict[Loc, int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
            here, line = (*loc, name), key.start_mark.line + 1
            if here in lines:
                raise ConfigError(f"{path}:{line}: {format_loc(here)}: duplicate key (first given on line {lines[here]}); keep one.")
            lines[here] = line
            _index(path, value, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _index(path, item, (*loc, index), lines)
