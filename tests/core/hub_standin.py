"""A loopback stand-in for the Hugging Face Hub: the HTTP calls huggingface_hub makes to create a dataset
repository and commit small files to it, answered from memory on 127.0.0.1.

It serves repo creation (`POST /api/repos/create`), dataset info, the recursive file tree, README metadata
validation, `preupload` (every file "regular": sent inline, base64, in the commit, as the Hub allows for small
files) and the ndjson `commit`. Every request needs `Authorization: Bearer <token>` with the token it was given;
`read_only` makes that token unable to write. It records each request and each commit it applied.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import re
import threading
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = r"/api/datasets/(?P<repo>[^/]+/[^/]+)"
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(content: bytes) -> str:
    """The git blob id of `content`, which the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": GITATTRIBUTES})


@dataclass
class Commit:
    repo_id: str
    summary: str
    description: str
    added: dict[str, bytes]
    deleted: list[str]


@dataclass
class Received:
    method: str
    path: str
    body: bytes


class StandInHub:
    """The stand-in server; use it as a context manager and point HF_ENDPOINT at `url`."""

    def __init__(self, token: str, *, read_only: bool = False):
        self.token = token
        self.read_only = read_only
        self.repos: dict[str, Repo] = {}
        self.commits: list[Commit] = []
        self.received: list[Received] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def calls(self) -> list[str]:
        """Each request received, as `METHOD /path` (no query)."""
        return [f"{r.method} {r.path}" for r in self.received]

    def answer(self, method: str, path: str, body: bytes, authorization: str | None) -> tuple[int, Any]:
        """The status and JSON body for one request."""
        self.received.append(Received(method, path, body))
        if authorization != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate(json.loads(body)["content"])
        match = re.fullmatch(REPO + r"(?P<rest>/.*)?", path)
        if match is None or match["repo"] not in self.repos:
            return 404, {"error": "Repository not found"}
        repo_id, rest, repo = match["repo"], match["rest"] or "", self.repos[match["repo"]]
        if method == "GET" and rest == "":
            return 200, {"id": repo_id, "private": repo.private, "sha": "0" * 40}
        if method == "GET" and rest == "/tree/main":
            return 200, _tree(repo.files)
        if self.read_only:
            return 403, {"error": f"You don't have the rights to write to {repo_id}"}
        if method == "POST" and rest == "/preupload/main":
            files = json.loads(body)["files"]
            return 200, {"files": [_upload_mode(repo, f["path"]) for f in files]}
        if method == "POST" and rest == "/commit/main":
            return self._commit(repo_id, repo, body)
        return 404, {"error": f"No route for {method} {path}"}

    def _create(self, payload: dict[str, Any]) -> tuple[int, Any]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if payload.get("type") != "dataset":
            return 400, {"error": "Only dataset repositories here"}
        if self.read_only:
            return 403, {"error": f"You don't have the rights to create a dataset under the namespace {payload['organization']}"}
        if repo_id in self.repos:
            return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/datasets/{repo_id}"}
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or payload.get("private") is True)
        return 200, {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id}

    def _validate(self, content: str) -> tuple[int, Any]:
        front = re.match(r"---\n(.*?)\n---\n", content, re.S)
        try:
            yaml.safe_load(front.group(1) if front else "")
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": str(exc)}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def _commit(self, repo_id: str, repo: Repo, body: bytes) -> tuple[int, Any]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        added = {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"}
        deleted = [line["value"]["path"] for line in lines if line["key"] == "deletedFile"]
        if any(line["key"] not in ("header", "file", "deletedFile") for line in lines):
            return 400, {"error": "This stand-in takes regular files and file deletions only"}
        missing = [path for path in deleted if path not in repo.files]
        if missing:
            return 404, {"error": f"A file with this name doesn't exist: {missing[0]}"}
        for path in deleted:
            del repo.files[path]
        repo.files.update(added)
        self.commits.append(Commit(repo_id, header["summary"], header.get("description", ""), added, deleted))
        oid = hashlib.sha1(body).hexdigest()
        return 200, {"commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}


def _tree(files: dict[str, bytes]) -> list[dict[str, Any]]:
    folders = sorted({"/".join(path.split("/")[:i]) for path in files for i in range(1, path.count("/") + 1)})
    entries = [{"type": "directory", "path": folder, "oid": "0" * 40, "size": 0} for folder in folders]
    return entries + [{"type": "file", "path": path, "oid": git_oid(data), "size": len(data)} for path, data in sorted(files.items())]


def _upload_mode(repo: Repo, path: str) -> dict[str, Any]:
    known = repo.files.get(path)
    return {"path": path, "uploadMode": "regular", "shouldIgnore": False, "oid": git_oid(known) if known is not None else None}


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = hub.answer(self.command, urlsplit(self.path).path, body, self.headers.get("Authorization"))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 404 and "Repository" in payload.get("error", ""):
                self.send_header("X-Error-Code", "RepoNotFound")
            if status == 401:
                self.send_header("X-Error-Message", payload["error"])
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the requests are recorded in `hub.received`."""

    return Handler
