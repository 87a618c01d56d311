"""Reading chain inputs one row at a time: JSONL, JSON arrays, CSV, Parquet, Hugging Face datasets, Python objects.

A source is checked when it is opened (the file exists, its format is known, the columns asked for
exist in its header) and streamed afterwards, so that memory stays flat at any size.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import csv
from dataclasses import dataclass
import hashlib
import io
import json
import os
from pathlib import Path
import re
from typing import Any, BinaryIO, TextIO

import orjson
from pydantic import BaseModel, ValidationError

from chainette import parquet
from chainette.errors import InputError, describe_validation_error
from chainette.media import ROOT_CONTEXT
from chainette.remote import Location, RemoteFile, content_hash, is_url, open_binary
from chainette.schema import json_data
from chainette.values import unwritable, why

HF_PREFIX = "hf:"
ColumnSpec = str | Sequence[str] | Mapping[str, str] | None


@dataclass(frozen=True)
class Columns:
    """Which input fields to keep, and their names in the row: (source, target) pairs, in order."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, spec: ColumnSpec | Columns) -> Columns | None:
        """From `"text,label"` (keep both), `"review=text,stars"` (review renamed text), a list of such items, or {source: target}."""
        if spec is None or isinstance(spec, Columns):
            return spec
        if isinstance(spec, Mapping):
            items = [(str(source), str(target)) for source, target in spec.items()]
        else:
            parts = spec.split(",") if isinstance(spec, str) else list(spec)
            items = [_column_item(str(part)) for part in parts]
        described = ",".join(f"{s}={t}" if s != t else s for s, t in items)
        if not items or any(not s or not t for s, t in items):
            raise InputError(f"Columns '{described}': every column needs a name; write them as 'text,label' or 'review=text,stars'.")
        targets = [target for _, target in items]
        twice = sorted({target for target in targets if targets.count(target) > 1})
        if twice:
            raise InputError(f"Columns '{described}': {', '.join(twice)} would be set twice; give each column its own name.")
        return cls(tuple(items))

    @property
    def sources(self) -> list[str]:
        return [source for source, _ in self.pairs]

    def describe(self) -> str:
        return ",".join(f"{s}={t}" if s != t else s for s, t in self.pairs)

    def select(self, value: dict[str, Any], where: str) -> dict[str, Any]:
        """The picked fields under their new names; ValueError when the row lacks one."""
        missing = [source for source in self.sources if source not in value]
        if missing:
            raise ValueError(f"{where}: no column {_names(missing)} (the row has: {', '.join(map(str, value)) or 'no fields'})")
        return {target: value[source] for source, target in self.pairs}

    def check_header(self, source: object, header: Iterable[str]) -> None:
        """InputError when a picked column is absent from the whole file."""
        available = list(header)
        missing = [name for name in self.sources if name not in available]
        if missing:
            raise InputError(
                f"{source}: no column {_names(missing)}, asked for by the columns '{self.describe()}'. "
                f"The columns available are: {', '.join(available) or 'none'}. Fix --columns (or columns=) to name them."
            )


def _column_item(item: str) -> tuple[str, str]:
    source, _, target = item.partition("=")
    source = source.strip()
    return source, target.strip() if "=" in item else source


def _names(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


@dataclass(slots=True)
class RawRow:
    """One input row before validation: where it came from, its text or object, the columns to pick, a problem found when
    reading it, the folder its relative media paths are read from (its file's; None: the current directory), and its
    `position` in the whole input when it is run apart from it (a plan's sample), which numbers it then."""

    where: str
    value: str | Any
    columns: Columns | None = None
    problem: str | None = None
    folder: Path | None = None
    position: int | None = None


def read_source(source: str | os.PathLike[str], columns: Columns | None = None) -> Iterator[RawRow]:
    """Rows of a file, local or at a URL (format chosen by extension), or of a Hugging Face dataset
    (`hf:name[:config]:split`), opened now."""
    spec = hf_source(source)
    rows = _hf_rows(spec, columns) if spec is not None else read_file(source, columns)
    return rows if columns is None else _with_columns(rows, columns)


def read_file(source: str | os.PathLike[str], columns: Columns | None = None) -> Iterator[RawRow]:
    """Rows of a JSONL, JSON, CSV or Parquet file, local or at a URL (chainette.remote); InputError now for a missing
    file, unknown extension or column. Each row's `where` names the file (its URL) and line or index."""
    path = location(source)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        extension = f"extension '{path.suffix}'" if path.suffix else "no extension"
        raise InputError(
            f"Input file {path}: {extension}, so its format is unknown. Supported: {', '.join(READERS)} "
            "(rename the file to match its format), or hf:name[:config]:split for a Hugging Face dataset."
        )
    open_binary(path).close()
    rows = reader(path, columns)
    return rows if isinstance(path, RemoteFile) else _in_folder(rows, path.resolve().parent)


def _in_folder(rows: Iterator[RawRow], folder: Path) -> Iterator[RawRow]:
    """`rows`, each reading its relative media paths from `folder` (a local input file's; an input at a URL has none)."""
    for row in rows:
        row.folder = folder
        yield row


def _with_columns(rows: Iterator[RawRow], columns: Columns) -> Iterator[RawRow]:
    for row in rows:
        row.columns = columns
        yield row


def location(source: str | os.PathLike[str]) -> Location:
    """A local path, or the file a URL names (its filesystem's package imported now)."""
    return RemoteFile.at(source) if isinstance(source, str) and is_url(source) else Path(source)


def _open_text(path: Location, newline: str | None = None) -> TextIO:
    """The file as UTF-8 text (a leading byte-order mark skipped); InputError when its first 64 KiB are not UTF-8 text.
    A bad byte further on raises UnicodeDecodeError while reading: turn it into `encoding_error(path)`."""
    file = open_binary(path)
    problem = _encoding_problem(path, file, whole=False)
    if problem is not None:
        file.close()
        raise problem
    file.seek(0)
    return io.TextIOWrapper(file, encoding="utf-8-sig", newline=newline)


def encoding_error(path: Location) -> InputError:
    """The InputError naming the line of the first byte of `path` that is not UTF-8 text (after a UnicodeDecodeError)."""
    with open_binary(path) as file:
        problem = _encoding_problem(path, file, whole=True)
    return problem or InputError(f"Cannot read input file {path}: it changed while it was read.")


TEXT_CHUNK = 1 << 16
NEWLINE = b"\n"
UNICODE_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def _encoding_problem(path: Location, file: BinaryIO, whole: bool) -> InputError | None:
    """Why `file` is not UTF-8 text (a UTF-16 or UTF-32 byte-order mark, a NUL byte, a byte UTF-8 cannot decode),
    naming the line, or None; reads one chunk, or all of it when `whole`."""
    pending, offset, line = b"", 0, 1
    while chunk := file.read(TEXT_CHUNK):
        data = pending + chunk
        if offset == 0:
            encoding = next((name for bom, name in UNICODE_BOMS.items() if data.startswith(bom)), None)
            if encoding is not None:
                return InputError(
                    f"{path}: the file is {encoding} text (it starts with a {encoding} byte-order mark), but inputs are read as "
                    f"UTF-8. Convert it, for example: iconv -f {encoding} -t UTF-8 {path} > {path.stem}-utf8{path.suffix}"
                )
        bad, reason, pending = _first_bad_byte(data)
        if bad is not None:
            return _not_utf8(path, line + data.count(NEWLINE, 0, bad), offset + bad, data[bad], reason)
        read = len(data) - len(pending)
        offset, line = offset + read, line + data.count(NEWLINE, 0, read)
        if not whole:
            return None
    if pending:
        return _not_utf8(path, line, offset, pending[0], "starts a character that the file ends before completing")
    return None


def _not_utf8(path: Location, line: int, offset: int, byte: int, reason: str) -> InputError:
    source = "UTF-16" if byte == 0 else "WINDOWS-1252"
    return InputError(
        f"{path}:{line}: the file is not UTF-8 text: byte 0x{byte:02x} at offset {offset} {reason}. Give the file saved as "
        f"UTF-8, for example: iconv -f {source} -t UTF-8 {path} > {path.stem}-utf8{path.suffix}"
    )


def _first_bad_byte(data: bytes) -> tuple[int | None, str, bytes]:
    """The index of the first byte of `data` that is not UTF-8 text (a NUL counts) and why, and the incomplete
    character `data` may end with (the next chunk completes it)."""
    nul = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data" and (nul < 0 or nul > exc.start):
            return None, "", data[exc.start :]
        if nul < 0 or exc.start < nul:
            return exc.start, f"is an {exc.reason} (is it binary, or text in another encoding such as Windows-1252?)", b""
    if nul >= 0:
        return nul, "is a NUL byte (is it binary, or UTF-16 text without a byte-order mark?)", b""
    return None, "", b""


def _json_rows(path: Location, columns: Columns | None) -> Iterator[RawRow]:
    """A JSONL file (one object per line, blank lines skipped), or a file holding one JSON array; its start is checked now."""
    _open_text(path).close()
    return _json_records(path)


def _json_records(path: Location) -> Iterator[RawRow]:
    with _open_text(path) as file:
        first = file.read(1)
        while first.isspace():
            first = file.read(1)
        file.seek(0)
        try:
            if first == "[":
                yield from _json_array(path, file.read())
                return
            where = f"{path}:"  # formatted once: a row's place is this and its line number
            for number, line in enumerate(file, start=1):
                if line.strip():
                    yield RawRow(f"{where}{number}", line)
        except UnicodeDecodeError:
            raise encoding_error(path) from None


def _json_array(path: Location, text: str) -> Iterator[RawRow]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: the file starts with '[' but is not a valid JSON array: {exc.msg}.") from None
    except RecursionError:
        raise InputError(
            f"{path}:{_deep_line(text)}: the JSON is nested more than {MAX_DEPTH} levels deep, too deep to be read; "
            "no input row needs so many levels of lists and objects: check the file."
        ) from None
    for index, item in enumerate(items):
        yield RawRow(f"{path}[{index}]", item)


MAX_DEPTH = 200
"""The most levels of lists and objects an input row may nest (JSON writers stop at 254, a Python parser near 1000)."""
JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _deep_line(text: str) -> int:
    """The line where the nesting of the JSON `text` first passes MAX_DEPTH levels (1 if it never does)."""
    depth = 0
    for token in JSON_TOKENS.finditer(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(token.group(), 0)
        if depth > MAX_DEPTH:
            return text.count("\n", 0, token.start()) + 1
    return 1


_EXTRA = "\0extra"


def _csv_rows(path: Location, columns: Columns | None) -> Iterator[RawRow]:
    """A CSV file with a header line; values stay strings (the input model converts them); `where` is file:line."""
    with _open_text(path, newline="") as file:
        header = _csv_header(path, csv.DictReader(file))
    if columns is not None:
        columns.check_header(path, header)
    return _csv_records(path)


def _csv_header(path: Location, reader: csv.DictReader[str]) -> list[str]:
    try:
        return list(reader.fieldnames or [])
    except UnicodeDecodeError:
        raise encoding_error(path) from None
    except csv.Error as exc:
        raise InputError(f"{path}:1: cannot read the CSV header: {exc}. Save the file as UTF-8 CSV with a header line.") from None


def _csv_records(path: Location) -> Iterator[RawRow]:
    with _open_text(path, newline="") as file:
        reader = csv.DictReader(file, restkey=_EXTRA)
        width = len(_csv_header(path, reader))
        start = reader.line_num + 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise encoding_error(path) from None
            except csv.Error as exc:
                raise InputError(f"{path}:{reader.line_num}: not valid CSV: {exc}. Fix the file, or convert it to JSONL.") from None
            extra = record.pop(_EXTRA, None)
            problem = f"{len(extra) + width} fields but the header has {width} (is a value with a comma unquoted?)" if extra else None
            yield RawRow(f"{path}:{start}", record, problem=problem)
            start = reader.line_num + 1


def _parquet_rows(path: Location, columns: Columns | None) -> Iterator[RawRow]:
    """A Parquet file, streamed by record batches (only the picked columns are read); `where` is file[row index]."""
    header = parquet.column_names(path, InputError)
    if columns is not None:
        columns.check_header(path, header)
    selected = columns.sources if columns is not None else None
    return (RawRow(f"{path}[{index}]", row) for index, row in enumerate(parquet.read_rows(path, selected)))


READERS: dict[str, Callable[[Location, Columns | None], Iterator[RawRow]]] = {
    ".jsonl": _json_rows,
    ".ndjson": _json_rows,
    ".json": _json_rows,
    ".csv": _csv_rows,
    ".parquet": _parquet_rows,
    ".pq": _parquet_rows,
}


@dataclass(frozen=True)
class HfSource:
    """A Hugging Face dataset named on the command line: `hf:name`, `hf:name:split` or `hf:name:config:split`."""

    name: str
    config: str | None
    split: str

    @property
    def identity(self) -> str:
        return f"{HF_PREFIX}{self.name}:{self.config or ''}:{self.split}"


def hf_source(source: object) -> HfSource | None:
    """The dataset a `hf:` source names (None for anything else); InputError when it is malformed."""
    if not isinstance(source, str) or not source.startswith(HF_PREFIX) or is_url(source):
        return None
    parts = source[len(HF_PREFIX) :].split(":")
    if len(parts) > 3 or not parts[0] or not all(parts[-1:]):
        raise InputError(f"Input '{source}': write a Hugging Face dataset as hf:name, hf:name:split or hf:name:config:split.")
    if len(parts) == 3:
        return HfSource(parts[0], parts[1] or None, parts[2])
    return HfSource(parts[0], None, parts[1] if len(parts) == 2 else "train")


def _hf_rows(spec: HfSource, columns: Columns | None) -> Iterator[RawRow]:
    """The split streamed with `datasets.load_dataset(..., streaming=True)`; `where` is hf:name[split][index]."""
    try:
        import datasets
    except ImportError:
        raise InputError(
            f'Reading {spec.identity} needs the datasets library, which is not installed: pip install "chainette-core[datasets]".'
        ) from None
    try:
        dataset = datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True)
    except Exception as exc:
        raise InputError(
            f"Cannot load the Hugging Face dataset '{spec.name}' (config {spec.config or 'default'}, split {spec.split}): {exc}"
        ) from None
    header = getattr(dataset, "column_names", None)
    if columns is not None and header:
        columns.check_header(f"{HF_PREFIX}{spec.name}[{spec.split}]", header)
    return (RawRow(f"{HF_PREFIX}{spec.name}[{spec.split}][{index}]", dict(item)) for index, item in enumerate(dataset))


def from_objects(rows: Iterable[Any], columns: Columns | None = None, folder: Path | None = None) -> Iterator[RawRow]:
    """Rows given in Python: dicts or pydantic models, reading their relative media paths from `folder` (None: the
    current directory)."""
    for index, row in enumerate(rows):
        if isinstance(row, BaseModel):
            row = row.model_dump(mode="json")
        yield RawRow(f"inputs[{index}]", row, columns, folder=folder)


def decode(row: RawRow) -> dict[str, Any]:
    """The row's object as read (all its columns); ValueError for a row that could not be read or is not a JSON object."""
    if row.problem is not None:
        raise ValueError(f"{row.where}: {row.problem}")
    text = row.value if isinstance(row.value, str) else None
    value = row.value if text is None else _json_line(row.where, text)
    if not isinstance(value, dict):
        raise ValueError(f"{row.where}: expected a JSON object, got {type(value).__name__}")
    if (text is None or text.count("{") + text.count("[") > MAX_DEPTH) and _too_deep(value):  # fewer brackets: not so deep
        raise ValueError(f"{row.where}: nested more than {MAX_DEPTH} levels deep (lists and objects inside each other); check the row")
    return value


def _json_line(where: str, text: str) -> Any:
    """The value of one JSONL line; ValueError naming the column of a syntax error. NaN, Infinity and integers beyond 64
    bits, which orjson refuses, are read (by the json module) so that `validate` judges them as in every other format."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        problem = f"{where}: not valid JSON: {exc.msg} (column {exc.colno})"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(problem) from None
    if unwritable(value) is None:
        raise ValueError(problem)
    return value


def validate(row: RawRow, value: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """The decoded `value` of `row` with its columns picked, validated by `model` when given (ValueError otherwise).
    Picked columns the model does not read are kept after its fields: the user asked for them."""
    if row.columns is not None:
        value = row.columns.select(value, row.where)
    data = value if model is None else _validated(row, value, model)
    found = unwritable(data)
    if found is not None:
        field, number = found
        raise ValueError(
            f"{row.where}: field '{field}' is {why(number)}, so the row is refused rather than written altered; give another "
            "number (or null, where the input model allows it)"
        )
    return data


def _validated(row: RawRow, value: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    try:
        data = json_data(model.__pydantic_validator__.validate_python(value, context={ROOT_CONTEXT: row.folder}))
    except Exception as exc:
        problems = describe_validation_error(exc, "field '{}'") if isinstance(exc, ValidationError) else str(exc)
        raise ValueError(f"{row.where}: does not match {model.__name__}: {problems}") from None
    if row.columns is not None:
        data.update({key: field for key, field in value.items() if key not in data})
    return data


def _too_deep(value: Any) -> bool:
    """Whether `value` nests lists and dicts more than MAX_DEPTH levels deep (one that holds itself does)."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child for item in level for child in (item.values() if isinstance(item, dict) else item) if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def row_id_of(row: RawRow, value: dict[str, Any], id_column: str) -> str:
    """The user's own id of a decoded row, from its `id_column` (a non-empty string or an integer); ValueError otherwise."""
    found = value.get(id_column)
    if isinstance(found, bool) or not isinstance(found, (str, int)) or found == "":
        got = "no such column" if id_column not in value else f"got {found!r}"
        raise ValueError(f"{row.where}: the id column '{id_column}' needs a non-empty string or an integer ({got})")
    return str(found)


Inputs = str | os.PathLike[str] | Iterable[dict[str, Any] | BaseModel]


def open_rows(source: Inputs, columns: Columns | None, *, media_root: str | os.PathLike[str] | None = None) -> Iterable[RawRow]:
    """The input rows; a file or dataset is opened now, so a missing file or column stops the run before it starts.
    Rows given in Python read their relative media paths from `media_root` (None: the current directory)."""
    if isinstance(source, (str, os.PathLike)):
        return read_source(source, columns)
    return from_objects(source, columns, Path(media_root).resolve() if media_root is not None else None)


def _stable(value: Any) -> str:
    """A value JSON cannot hold, as the same text on every run: bytes and images (PIL's `tobytes`) by the hash of
    their bytes, anything else by its `str` (never a repr holding a memory address, for those two)."""
    data = value.tobytes() if hasattr(value, "tobytes") else value
    if isinstance(data, (bytes, bytearray, memoryview)):
        return hashlib.sha256(data).hexdigest()
    return str(value)


def fingerprint(source: Inputs, columns: Columns | None = None, id_column: str | None = None) -> str | None:
    """A hash of the inputs when they can be read twice (a file's bytes, a list, a dataset's name and split), with
    the columns picked and the id column; None for a one-shot iterator. A file at a URL is not read for it when its
    filesystem names its version (an ETag, hash or modification time: RemoteFile.version); else its bytes are hashed."""
    digest = hashlib.blake2b(digest_size=16)
    dataset = hf_source(source)
    if dataset is not None:
        digest.update(dataset.identity.encode())
    elif isinstance(source, (str, os.PathLike)):
        try:
            found = location(source)
            version = found.version() if isinstance(found, RemoteFile) else None
            if version is None:
                content_hash(found, digest)
            else:
                digest.update(version.encode())
        except (InputError, OSError):
            return None
    elif isinstance(source, (list, tuple)):
        for row in source:
            data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
            digest.update(json.dumps(data, sort_keys=True, default=_stable).encode())
    else:
        return None
    if columns is not None:
        digest.update(f"\0columns:{columns.describe()}".encode())
    if id_column is not None:
        digest.update(f"\0id_column:{id_column}".encode())
    return digest.hexdigest()
