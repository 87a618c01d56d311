"""Reading chain inputs: a JSONL file, a JSON array file, or Python objects, one row at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import json
import os
from pathlib import Path
from typing import Any, TextIO

import orjson
from pydantic import BaseModel

from chainette.errors import InputError


@dataclass(slots=True)
class RawRow:
    """One input row before validation: where it came from, and its text or object."""

    where: str
    value: str | Any


def read_file(path: str | os.PathLike[str]) -> Iterator[RawRow]:
    """Rows of a JSONL file (one object per line, blank lines skipped) or of a file holding one JSON array."""
    path = Path(path)
    with _open(path) as file:
        first = file.read(1)
        while first.isspace():
            first = file.read(1)
        file.seek(0)
        if first == "[":
            yield from _json_array(path, file.read())
            return
        for number, line in enumerate(file, start=1):
            if line.strip():
                yield RawRow(f"{path}:{number}", line)


def _open(path: Path) -> TextIO:
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read input file {path}: {exc.strerror}.") from None


def _json_array(path: Path, text: str) -> Iterator[RawRow]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: the file starts with '[' but is not a valid JSON array: {exc.msg}.") from None
    for index, item in enumerate(items):
        yield RawRow(f"{path}[{index}]", item)


def from_objects(rows: Iterable[Any]) -> Iterator[RawRow]:
    """Rows given in Python: dicts or pydantic models."""
    for index, row in enumerate(rows):
        if isinstance(row, BaseModel):
            row = row.model_dump(mode="json")
        yield RawRow(f"inputs[{index}]", row)


def parse(row: RawRow, model: type[BaseModel] | None) -> dict[str, Any]:
    """The row as a JSON-ready dict, validated by `model` when given; ValueError says what is wrong and where."""
    value = row.value
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{row.where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{row.where}: expected a JSON object, got {type(value).__name__}")
    if model is None:
        return value
    try:
        return model.model_validate(value).model_dump(mode="json")
    except Exception as exc:
        raise ValueError(f"{row.where}: does not match {model.__name__}: {_validation_summary(exc)}") from None


def _validation_summary(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"field '{'.'.join(map(str, e['loc'])) or '(root)'}': {e['msg']}" for e in errors())
