"""Media in the rows: the `Image`, `Document` and `Audio` input-model field types, and the reference a row keeps.

A media value keeps where its bytes are (a local file, or an http(s) URL a server fetches itself) and their sha256,
never the bytes: they are read when a request is built (`read_bytes`) and dropped after. Bytes given directly (bytes,
a data URL, a PIL image, a Hugging Face `datasets` dict, a Parquet binary column) are written once to a
content-addressed folder (`media_store`), so that a row never carries them. A validated row holds the value's JSON
form, its reference: `{"media": kind, "media_type", "sha256", "path" | "url"}` (`is_reference`). The media type is
detected from the bytes by a magic-number table (`sniff`). Chainette never downloads a URL.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
import hashlib
import mimetypes
import os
from pathlib import Path
import re
import tempfile
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from chainette.errors import ConfigError, RowError

ROOT_CONTEXT = "chainette_media_root"
"""The validation-context key naming the folder relative media paths are read from (the input file's folder)."""
STORE_ENV = "CHAINETTE_MEDIA_DIR"
REFERENCE_KEYS = frozenset({"media", "media_type", "sha256"})
KINDS = ("image", "document", "audio")
CHUNK = 1 << 20

# (offset, magic bytes, media type), checked in order; RIFF containers are told apart by their form type at offset 8.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (0, b"%PDF-", "application/pdf"),
    (8, b"WAVE", "audio/wav"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\xff\xfb", "audio/mpeg"),
    (0, b"\xff\xf3", "audio/mpeg"),
    (0, b"\xff\xf2", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
)
SNIFF_BYTES = 16
KNOWN = {
    "image": "PNG, JPEG, GIF or WebP",
    "document": "PDF",
    "audio": "WAV, MP3, FLAC or Ogg",
}


def sniff(head: bytes) -> str | None:
    """The media type of bytes starting with `head` (their first SNIFF_BYTES), or None when no signature matches."""
    for offset, magic, media_type in SIGNATURES:
        if head[offset : offset + len(magic)] == magic and (offset == 0 or head[:4] == b"RIFF"):
            return media_type
    return None


def kind_of(media_type: str) -> str:
    """The kind of a media type: image, document (PDF) or audio."""
    if media_type == "application/pdf":
        return "document"
    return media_type.split("/", 1)[0]


def is_reference(value: object) -> bool:
    """Whether `value` is a media value's JSON form (what a validated row holds for a media field)."""
    return type(value) is dict and value.keys() >= REFERENCE_KEYS and value["media"] in KINDS


def media_store() -> Path:
    """The folder where bytes given directly are kept, one file per sha256: $CHAINETTE_MEDIA_DIR, else `media` beside
    the response cache."""
    folder = os.environ.get(STORE_ENV)
    if folder:
        return Path(folder).expanduser()
    from chainette.cache import cache_path

    return cache_path().parent / "media"


class Media:
    """A media value: its kind, detected media type, sha256 (None for a URL: chainette never downloads it), and its
    local `path` or `url`. Subclasses fix the kind; a value of another kind is refused when validated."""

    kind: ClassVar[str] = ""
    __slots__ = ("media_type", "path", "sha256", "url")

    def __init__(self, media_type: str, sha256: str | None, *, path: str | None = None, url: str | None = None):
        self.media_type, self.sha256, self.path, self.url = media_type, sha256, path, url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path or self.url!r}, {self.media_type}, sha256={self.sha256})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Media) and self.reference() == other.reference()

    def __hash__(self) -> int:
        return hash((self.sha256, self.path, self.url))

    def reference(self) -> dict[str, Any]:
        """The value's JSON form: what rows, outputs and `flattened/` hold."""
        where = {"path": self.path} if self.path is not None else {"url": self.url}
        return {"media": self.kind, "media_type": self.media_type, "sha256": self.sha256, **where}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(Media.reference, when_used="json")
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "description": f"{cls.kind}: a file path, a data URL or an http(s) URL"}

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> Media:
        context = info.context if isinstance(info.context, Mapping) else {}
        root = context.get(ROOT_CONTEXT)
        made = value if isinstance(value, Media) else from_value(value, Path(root) if root is not None else Path.cwd())
        if not cls.kind:
            return made
        if made.kind and made.kind != cls.kind:
            raise ValueError(f"expected {_a(cls.kind)} ({KNOWN[cls.kind]}), got {_a(made.kind)} ({made.media_type})")
        return made if type(made) is cls else cls(made.media_type, made.sha256, path=made.path, url=made.url)


class Image(Media):
    """An image input field (PNG, JPEG, GIF, WebP)."""

    kind = "image"
    __slots__ = ()


class Document(Media):
    """A document input field (PDF)."""

    kind = "document"
    __slots__ = ()


class Audio(Media):
    """An audio input field (WAV, MP3, FLAC, Ogg)."""

    kind = "audio"
    __slots__ = ()


CLASSES: dict[str, type[Media]] = {"image": Image, "document": Document, "audio": Audio}


def from_value(value: Any, root: Path) -> Media:
    """The media value of one accepted input form; ValueError saying what was wrong (pydantic names the field)."""
    if is_reference(value):
        return _from_reference(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _stored(bytes(value))
    if isinstance(value, Mapping):
        return _from_dataset_dict(value, root)
    if isinstance(value, os.PathLike):
        return _from_path(Path(value), root)
    if isinstance(value, str):
        return _from_text(value, root)
    if _is_pil_image(value):
        return _stored(_png_of(value))
    raise ValueError(
        f"cannot read media from {type(value).__name__}: give a file path, bytes, a data URL, an http(s) URL, a PIL image "
        "or a Hugging Face datasets Image/Audio value"
    )


def _from_text(text: str, root: Path) -> Media:
    if text.startswith("data:"):
        return _stored(_data_url_bytes(text))
    if text.startswith(("http://", "https://")):
        guessed, _ = mimetypes.guess_type(text.split("?", 1)[0])
        return CLASSES.get(kind_of(guessed) if guessed else "", Media)(guessed or "", None, url=text)
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text) and not text.startswith("file://"):
        raise ValueError(f"'{text[:80]}' is a URL chainette cannot use: give an http(s) URL, a data URL or a local path")
    return _from_path(Path(text.removeprefix("file://")), root)


def _from_reference(value: Mapping[str, Any]) -> Media:
    cls = CLASSES[value["media"]]
    return cls(str(value["media_type"]), value["sha256"], path=value.get("path"), url=value.get("url"))


def _from_dataset_dict(value: Mapping[str, Any], root: Path) -> Media:
    """Hugging Face `datasets`: Image gives `{"bytes", "path"}`, Audio `{"bytes", "path"}` (undecoded) or
    `{"array", "sampling_rate", "path"}` (decoded; its file is read by path)."""
    data = value.get("bytes")
    if isinstance(data, (bytes, bytearray)):
        return _stored(bytes(data))
    path = value.get("path")
    if isinstance(path, str) and path:
        return _from_text(path, root)
    raise ValueError(
        f"a dict with keys {sorted(map(str, value))} holds no media: expected 'bytes' or 'path' (a datasets Image/Audio value)"
    )


def _data_url_bytes(url: str) -> bytes:
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64"):
        raise ValueError("a data URL must be base64: data:<media type>;base64,<data>")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the data URL's base64 is not valid ({exc})") from None


def _from_path(path: Path, root: Path) -> Media:
    full = (root / path.expanduser()).resolve()
    if not full.is_file():
        where = "" if path.is_absolute() else f" (a relative path is read from {root})"
        raise ValueError(f"no such file: {full}{where}")
    digest = hashlib.sha256()
    with open(full, "rb") as file:
        head = file.read(SNIFF_BYTES)
        digest.update(head)
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return _typed(head, digest.hexdigest(), str(full))


def _stored(data: bytes) -> Media:
    """A value for bytes given directly: written to the media store (once per sha256), referenced by path."""
    sha256 = hashlib.sha256(data).hexdigest()
    media_type = _detected(data[:SNIFF_BYTES])
    folder = media_store() / sha256[:2]
    target = folder / f"{sha256}{mimetypes.guess_extension(media_type) or ''}"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as file:
            file.write(data)
        os.replace(file.name, target)
    return CLASSES[kind_of(media_type)](media_type, sha256, path=str(target))


def _typed(head: bytes, sha256: str, path: str) -> Media:
    media_type = _detected(head, path)
    return CLASSES[kind_of(media_type)](media_type, sha256, path=path)


def _detected(head: bytes, path: str = "") -> str:
    media_type = sniff(head)
    if media_type is None:
        name = f"{path} is" if path else "the bytes are"
        raise ValueError(f"{name} not a media type chainette knows (images: {KNOWN['image']}; documents: PDF; audio: {KNOWN['audio']})")
    return media_type


def _is_pil_image(value: object) -> bool:
    return any(cls.__module__.startswith("PIL.") and cls.__name__ == "Image" for cls in type(value).__mro__)


def _png_of(image: Any) -> bytes:
    """A PIL image encoded as PNG (PIL is only imported by the caller that made the image)."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def media_fields(model: type[BaseModel] | None) -> dict[str, str]:
    """The kind of each media field of `model` (`Image`, `list[Document]`, `Audio | None`...), by field name."""
    if model is None:
        return {}
    found = {name: _kind_in(field.annotation) for name, field in model.model_fields.items()}
    return {name: kind for name, kind in found.items() if kind}


def _kind_in(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, Media):
        return annotation.kind
    return next((kind for kind in map(_kind_in, get_args(annotation)) if kind), "")


def refuse_kinds(engine: str, fields: Mapping[str, str], refused: Mapping[str, str]) -> None:
    """A ConfigError for the first field whose kind `refused` maps to a reason (what the engine's API lacks, what to do)."""
    for field, kind in fields.items():
        if kind in refused:
            raise ConfigError(f"field '{field}' is {_a(kind)}, which engine '{engine}' cannot take: {refused[kind]}")


def read_bytes(reference: Mapping[str, Any], *, field: str) -> bytes:
    """The bytes of a local media reference, checked against its sha256: a RowError (kind media) naming `field` when
    the file is gone or changed since the row was read (a resumed run notices an edited file)."""
    path = reference.get("path")
    if path is None:
        raise RowError(f"field '{field}': {reference.get('url')} is a URL and this backend cannot fetch URLs", kind="media")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RowError(f"field '{field}': cannot read {path}: {exc.strerror or exc}", kind="media") from None
    if hashlib.sha256(data).hexdigest() != reference["sha256"]:
        raise RowError(
            f"field '{field}': {path} changed since the row was read (its sha256 differs): the answer would not match the "
            "reference kept in the outputs. Restore the file, or start the run again with --overwrite.",
            kind="media",
        )
    return data


def data_url(reference: Mapping[str, Any], *, field: str) -> str:
    """The reference as a URL a server accepts: its http(s) URL, or a base64 data URL of its bytes."""
    url = reference.get("url")
    if url is not None:
        return str(url)
    return f"data:{reference['media_type']};base64,{base64_of(reference, field=field)}"


def base64_of(reference: Mapping[str, Any], *, field: str) -> str:
    """The reference's bytes in base64 (a RowError for a URL, which chainette does not download)."""
    return base64.b64encode(read_bytes(reference, field=field)).decode("ascii")
