"""The viewer's HTTP side and command: the page and JSON API on 127.0.0.1, `chainette view` starting, printing its URL
and stopping on Ctrl-C, and a folder that is not a run refused."""

from __future__ import annotations

from collections.abc import Iterator
import http.client
import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import threading

import pytest

from chainette.cli import main
from chainette.view.api import ViewServer
from chainette.view.reader import RunView

from .demo import make_run

SECRET = "sk-demo-viewer"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("chainette_openai")  # the demo run's step asks the fake server through the OpenAI backend
    return make_run(tmp_path_factory.mktemp("demo") / "out")


@pytest.fixture
def server(run_dir: Path) -> Iterator[ViewServer]:
    server = ViewServer(RunView(run_dir))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def get(server: ViewServer, path: str, host: str | None = None) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    connection.request("GET", path, headers={"Host": host} if host else {})
    answer = connection.getresponse()
    return answer.status, answer.getheader("Content-Type", ""), answer.read()


def test_the_page_is_served_whole_with_nothing_fetched_from_elsewhere(server: ViewServer) -> None:
    status, kind, body = get(server, "/")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert b"<script>" in body and b"http://" not in body and b"https://" not in body and b" src=" not in body


def test_the_api_answers_the_run_and_pages_of_rows(server: ViewServer) -> None:
    status, kind, body = get(server, "/api/run")
    summary = json.loads(body)
    assert (status, kind, summary["chain"], summary["running"]) == (200, "application/json", "reviews-demo", False)
    assert [node["id"] for node in summary["nodes"]] == ["chain_input", "long_enough", "sentiment"]
    assert json.loads(get(server, "/api/signature")[2]) == {"signature": summary["signature"]}
    page = json.loads(get(server, "/api/rows?node=sentiment&status=ok&limit=3")[2])
    assert len(page["items"]) == 3 and page["more"] is True
    rest = json.loads(get(server, f"/api/rows?node=sentiment&status=ok&limit=3&cursor={page['next']}")[2])
    assert len(rest["items"]) == 1 and rest["more"] is False
    errors = json.loads(get(server, "/api/rows?status=failed&q=row_id%3D5")[2])
    assert [item["row"]["row_id"] for item in errors["items"]] == ["5"]


@pytest.mark.parametrize(
    ("path", "message"),
    [("/api/rows?node=nope", "no node 'nope'"), ("/api/rows?node=sentiment&cursor=zz", "zz"), ("/api/rows?limit=x", "x")],
)
def test_bad_requests_get_a_400_with_the_reason(server: ViewServer, path: str, message: str) -> None:
    status, _, body = get(server, path)
    assert status == 400 and message in json.loads(body)["error"]


def test_unknown_paths_and_other_host_names_are_refused(server: ViewServer) -> None:
    assert get(server, "/api/nothing")[0] == 404
    assert get(server, "/api/run", host="attacker.example:80")[0] == 403


def test_no_answer_holds_the_engine_key(server: ViewServer, run_dir: Path) -> None:
    answers = [get(server, path)[2] for path in ("/api/run", "/api/rows?node=sentiment", "/api/rows?status=failed")]
    assert all(SECRET.encode() not in answer for answer in answers)


def test_view_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(tmp_path), "--no-browser"]) == 1
    assert f"{tmp_path} is not a chainette run directory" in capsys.readouterr().err


def test_view_refuses_a_port_in_use(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(run_dir), "--port", str(port), "--no-browser"]) == 1
    assert f"Cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def test_view_prints_its_url_serves_the_run_and_stops_on_ctrl_c(run_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chainette", "view", str(run_dir), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"Viewing {run_dir} at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/run")
        assert json.loads(connection.getresponse().read())["chain"] == "reviews-demo"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Stopped." in out and "Traceback" not in err
