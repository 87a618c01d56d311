"""The viewer's HTTP side: the page and a small JSON API over a `RunView`, answered on 127.0.0.1 only.

GET /              the page (HTML, CSS and script inline: nothing is fetched from elsewhere)
GET /api/run       the chain, its nodes and figures, and the run's `signature`
GET /api/signature the signature alone, which the page polls to follow a run in progress
GET /api/rows      a page of rows: node (none: every node's errors), status (ok, failed, filtered), q, cursor, limit
"""

from __future__ import annotations

from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chainette.view.reader import RunView

LOCAL_HOSTS = ("127.0.0.1", "localhost")


class ViewServer(ThreadingHTTPServer):
    """A server over one run; requests reach the reader one at a time (its indexes are shared)."""

    daemon_threads = True

    def __init__(self, view: RunView, port: int = 0):
        super().__init__((LOCAL_HOSTS[0], port), Handler)
        self.view = view
        self.lock = threading.Lock()
        self.page = files("chainette.view").joinpath("page.html").read_bytes()

    @property
    def url(self) -> str:
        return f"http://{LOCAL_HOSTS[0]}:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    server: ViewServer

    def do_GET(self) -> None:
        if not self._local_host():
            self._send(HTTPStatus.FORBIDDEN, b"Forbidden: the viewer answers on 127.0.0.1 only.", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
            return
        try:
            with self.server.lock:
                answer = self._answer(url.path, {key: values[-1] for key, values in parse_qs(url.query).items()})
        except (KeyError, ValueError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc.args[0]) if exc.args else "bad request"})
            return
        if answer is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {url.path}"})
        else:
            self._json(HTTPStatus.OK, answer)

    def _answer(self, path: str, query: dict[str, str]) -> dict[str, Any] | None:
        view = self.server.view
        if path == "/api/run":
            return {**view.summary(), "signature": view.signature()}
        if path == "/api/signature":
            return {"signature": view.signature()}
        if path == "/api/rows":
            node = query.get("node") or None
            limit = int(query.get("limit", "50"))
            return view.page(node, query.get("status", "ok"), query=query.get("q", ""), cursor=query.get("cursor"), limit=limit)
        return None

    def _local_host(self) -> bool:
        """Whether the request names this machine: a page elsewhere cannot reach the run through a rebound DNS name."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in LOCAL_HOSTS

    def _json(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the terminal shows the URL and nothing else."""
