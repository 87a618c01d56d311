"""Files at filesystem URLs (`s3://`, `gs://`, `hf://`, any scheme fsspec knows), read and written through fsspec.

The rule: a source or output written `scheme://...` is a URL; anything else is a local path (and `hf:name` a
Hugging Face dataset). fsspec (the extra `chainette-core[remote]`) and the scheme's own package (s3fs, gcsfs,
huggingface_hub) are imported only when a URL is used; credentials come from where that package looks for them.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
from pathlib import Path, PurePosixPath
import re
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

from chainette.errors import ChainetteError, InputError
from chainette.secrets import MASK, public_url

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
INSTALL = 'pip install "chainette-core[remote]"'
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub", "az": "adlfs", "abfs": "adlfs"}
CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or an instance role",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`",
    "hf": "HF_TOKEN or `hf auth login`",
}
CREDENTIALS["s3a"], CREDENTIALS["gcs"] = CREDENTIALS["s3"], CREDENTIALS["gs"]
VERSION_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "blob_id", "sha256", "generation", "VersionId")
"""Keys of `fs.info` that change whenever an object's bytes do (S3 and GCS ETags and hashes, a Hub file's blob id)."""
TIME_KEYS = ("LastModified", "mtime", "updated", "last_modified")


def is_url(source: object) -> bool:
    """Whether `source` is a filesystem URL (`scheme://...`) rather than a local path or an `hf:` dataset."""
    return isinstance(source, str) and URL.match(source) is not None


def shown(url: str) -> str:
    """`url` as messages show it: without `user:password@` credentials, each query-string value masked."""
    return public_url(url) or url


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str, error: type[ChainetteError] = InputError) -> tuple[Any, str]:
    """The fsspec filesystem serving `url` and the path inside it; `error` saying what to install when fsspec or
    the scheme's package is missing, or that the scheme is unknown."""
    try:
        import fsspec
    except ImportError:
        raise error(f"{shown(url)}: reading and writing URLs needs fsspec, which is not installed: {INSTALL}.") from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError:
        package = PACKAGES.get(scheme(url), "the fsspec package for this scheme")
        raise error(f"{shown(url)}: {scheme(url)}:// URLs need {package}, which is not installed: pip install {package}.") from None
    except ValueError as exc:
        raise error(
            f"{shown(url)}: {_cleaned(str(exc), url)}. Give a local path, or a URL of a filesystem fsspec knows (s3://, gs://, hf://)."
        ) from None
    return fs, str(path)


def problem(url: str, exc: BaseException) -> str:
    """What went wrong using `url`, in a sentence, with where credentials come from when they are the cause."""
    if isinstance(exc, FileNotFoundError):
        return f"{shown(url)}: no such file or object"
    text = _cleaned(str(exc), url) or type(exc).__name__
    if isinstance(exc, PermissionError) or "credential" in text.lower() or "access denied" in text.lower():
        where = CREDENTIALS.get(scheme(url), "the usual place for this filesystem")
        return f"{shown(url)}: access refused or no credentials ({text}); credentials are read from {where}"
    return f"{shown(url)}: {text}"


def _cleaned(text: str, url: str) -> str:
    """`text` (a filesystem's own message) with the URL's credentials and query-string values masked."""
    parts = urlsplit(url)
    secrets = [parts.password, *(value for _, value in parse_qsl(parts.query))]
    text = text.replace(url, shown(url))
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


@dataclass(frozen=True)
class RemoteFile:
    """One file at a URL, not opened yet: named by its URL in every message, with the name parts a local Path has."""

    url: str
    fs: Any
    path: str

    @classmethod
    def at(cls, url: str) -> RemoteFile:
        fs, path = filesystem(url)
        return cls(url, fs, path)

    def __str__(self) -> str:
        return shown(self.url)

    @property
    def suffix(self) -> str:
        return PurePosixPath(urlsplit(self.url).path).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(urlsplit(self.url).path).stem

    def open(self) -> BinaryIO:
        """The file for reading, buffered by fsspec (read in blocks, never whole); InputError when it cannot be."""
        try:
            file: BinaryIO = self.fs.open(self.path, "rb")
        except Exception as exc:
            raise InputError(f"Cannot read input {problem(self.url, exc)}.") from None
        return file

    def version(self) -> str | None:
        """What identifies the file's current bytes without reading them: its ETag, hash or blob id when the
        filesystem's `info` gives one, else its modification time (with the URL and size); None when it gives neither."""
        try:
            self.fs.invalidate_cache(self.path)  # a listing cached earlier in this process may hold an older version
            info: dict[str, Any] = self.fs.info(self.path)
        except Exception as exc:
            raise InputError(f"Cannot read input {problem(self.url, exc)}.") from None
        for keys, named in ((VERSION_KEYS, ""), (TIME_KEYS, self.url)):
            found = [f"{key}={info[key]}" for key in keys if info.get(key)]
            if found:
                return "\0".join([named, f"size={info.get('size')}", *found])
        return None


Location = Path | RemoteFile


def open_binary(location: Location) -> BinaryIO:
    """A local file or a file at a URL, opened for reading; InputError naming it when it cannot be."""
    if isinstance(location, RemoteFile):
        return location.open()
    try:
        if location.exists() and not location.is_file() and not location.is_dir():
            raise InputError(
                f"Cannot read input file {location}: it is not a regular file (a pipe or a device). A run reads its input "
                "more than once (to check it, to name the run, to resume it): save the rows to a file and give that."
            )
        return open(location, "rb")
    except OSError as exc:
        raise InputError(f"Cannot read input file {location}: {exc.strerror}.") from None


def content_hash(location: Location, digest: Any) -> None:
    """Feed the bytes of `location` to `digest`, a megabyte at a time."""
    with open_binary(location) as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)


def url_hash(url: str) -> str:
    """A short name for `url`, the same on every run (for a folder derived from it)."""
    return hashlib.blake2b(url.rstrip("/").encode(), digest_size=10).hexdigest()


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])
