"""Parquet files, through pyarrow (the optional extra `chainette-core[parquet]`, imported only when used).

Reading streams record batches. Exporting turns a folder of numbered JSONL output files into one Parquet
file each, with one schema for the whole folder inferred from the rows in two streaming passes:
per field, types are unified across batches (null → any type, int → float, struct fields merged);
a field whose types cannot be unified (say a number in one row and text in another) is stored as
JSON text, marked in the field's metadata so that chainette reads the original values back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from chainette.errors import ChainetteError
from chainette.remote import Location, open_binary

BATCH_ROWS = 10_000
JSON_FIELD = {b"chainette": b"json"}
INSTALL = 'pip install "chainette-core[parquet]"'


def require(purpose: str, error: type[ChainetteError] = ChainetteError) -> Any:
    """The pyarrow module, or `error` saying that `purpose` needs the parquet extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise error(f"{purpose} needs pyarrow, which is not installed: {INSTALL}.") from None
    return pyarrow


def column_names(path: Location, error: type[ChainetteError] = ChainetteError) -> list[str]:
    """The columns of a Parquet file (local or at a URL), from its footer; `error` when the file is not Parquet."""
    pa = require(f"Reading {path}", error)
    try:
        with open_binary(path) as handle:
            names: list[str] = pa.parquet.ParquetFile(handle).schema_arrow.names
            return names
    except (OSError, pa.ArrowException) as exc:
        raise error(f"Cannot read {path} as a Parquet file: {exc}.") from None


def read_rows(path: Location, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file (local or at a URL) as dicts, batch by batch (only `columns` when given); JSON-text
    fields decoded. A file at a URL is read through fsspec's file: its footer, then one row group at a time."""
    pa = require(f"Reading {path}")
    with open_binary(path) as handle:
        file = pa.parquet.ParquetFile(handle)
        schema = file.schema_arrow
        encoded = [name for name in json_fields(schema) if columns is None or name in columns]
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            for row in batch.to_pylist():
                for name in encoded:
                    if row[name] is not None:
                        row[name] = orjson.loads(row[name])
                yield row


def export_folder(source: Path, target: Path) -> None:
    """Write each numbered JSONL file of `source` as `target/<same number>.parquet` (temporary name, then renamed).

    Parquet files in `target` that no longer match a JSONL file are removed; an empty JSONL file gives none.
    """
    pa = require("Writing Parquet outputs")
    jsonl_files = sorted(source.glob("[0-9][0-9][0-9]*.jsonl"))
    schema = _schema(pa, (batch for path in jsonl_files for batch in _batches(path)))
    written: set[Path] = set()
    for jsonl_file in jsonl_files:
        final = target / f"{jsonl_file.stem}.parquet"
        temporary = target / f".{final.name}.tmp"
        if _write(pa, jsonl_file, temporary, schema):
            temporary.replace(final)
            written.add(final)
    if target.exists():
        for stale in target.glob("*.parquet"):
            if stale not in written:
                stale.unlink()


def _write(pa: Any, jsonl_file: Path, path: Path, schema: Any) -> bool:
    """Stream one JSONL file into a Parquet file at `path`; False (and no file) when it holds no rows."""
    writer = None
    try:
        for batch in _batches(jsonl_file):
            if writer is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pa.parquet.ParquetWriter(path, schema)
            writer.write_table(_table(pa, batch, schema))
    finally:
        if writer is not None:
            writer.close()
    return writer is not None


def _batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with open(path, "rb") as file:
        for line in file:
            batch.append(orjson.loads(line))
            if len(batch) == BATCH_ROWS:
                yield batch
                batch = []
    if batch:
        yield batch


def _schema(pa: Any, batches: Iterable[list[dict[str, Any]]]) -> Any:
    """One schema for every batch: each field's type unified across batches; None marks a JSON-text field."""
    types: dict[str, Any] = {}
    for batch in batches:
        for key in dict.fromkeys(key for row in batch for key in row):
            found = _column_type(pa, [row.get(key) for row in batch])
            if key not in types:
                types[key] = found
            elif types[key] is not None and found is not None:
                types[key] = _unify(pa, key, types[key], found)
            else:
                types[key] = None
    return pa.schema(
        [pa.field(key, pa.string(), metadata=JSON_FIELD) if kind is None else pa.field(key, kind) for key, kind in types.items()]
    )


def _column_type(pa: Any, values: list[Any]) -> Any:
    try:
        kind = pa.array(values).type
    except (ValueError, TypeError, OverflowError):
        return None
    return kind if _writable(pa, kind) else None


def _unify(pa: Any, key: str, first: Any, second: Any) -> Any:
    if first == second:
        return first
    try:
        merged = pa.unify_schemas([pa.schema([pa.field(key, first)]), pa.schema([pa.field(key, second)])], promote_options="permissive")
    except (ValueError, TypeError):
        return None
    return merged.field(key).type


def _writable(pa: Any, kind: Any) -> bool:
    """Parquet cannot store a struct without fields (an always-empty dict); such a field becomes JSON text."""
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_writable(pa, kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _writable(pa, kind.value_type)
    return True


def json_fields(schema: Any) -> list[str]:
    """The fields of a schema chainette stored as JSON text (types that could not be unified), to decode on reading."""
    return [field.name for field in schema if (field.metadata or {}).get(b"chainette") == b"json"]


def _table(pa: Any, batch: list[dict[str, Any]], schema: Any) -> Any:
    encoded = json_fields(schema)
    if encoded:
        batch = [_encode(row, encoded) for row in batch]
    return pa.Table.from_pylist(batch, schema=schema)


def _encode(row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    row = dict(row)
    for name in names:
        value = row.get(name)
        if value is not None:
            row[name] = orjson.dumps(value).decode()
    return row
