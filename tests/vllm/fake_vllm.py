"""A stand-in for the `vllm` executable: `vllm serve MODEL --host H --port P [--served-model-name N] ...`, and
`vllm run-batch -i IN -o OUT --model MODEL ...` (below).

It appends JSON events to $FAKE_VLLM_RECORD ("start" with its arguments, selected environment, its IPC folder
($VLLM_RPC_BASE_PATH, where it leaves a file as vLLM leaves its sockets) and child pid; "ready"; "term" or "term_ignored" on SIGTERM; "exit" before it exits by itself), starts one
child process in its process group (so that tests see the whole group stopped), then behaves as
$FAKE_VLLM_MODE says:
  ok             serve chainette.testing.FakeServer on the port after $FAKE_VLLM_DELAY seconds
  crash          print its environment (the key included, as a careless server might) and an error line,
                 and exit with status 3
  never_healthy  never listen
  ignore_term    like ok, but the process and its child ignore SIGTERM
  deaf_loading   like ok, but SIGTERM is ignored until the server is ready (vLLM's API server does so
                 while it loads the model)
On a SIGTERM it heeds, it kills its child and exits, as vLLM stops its workers. With
$FAKE_VLLM_EXIT_AFTER=N, once N chat requests arrived it prints an error line naming the key and exits
with status 7, leaving its child running (a crash mid-run). The fake server uses $FAKE_VLLM_API_KEY,
else $VLLM_API_KEY (as vLLM does), and answers after $FAKE_VLLM_LATENCY seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chainette.testing import FakeServer

CHILD = (
    "import os, signal, time\n"
    "if os.environ.get('FAKE_VLLM_MODE') == 'ignore_term':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(600)\n"
)


def record(event: str, **fields: object) -> None:
    with open(os.environ["FAKE_VLLM_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


READY: list[bool] = []  # set once the server listens
CHILDREN: list[subprocess.Popen[bytes]] = []


def on_sigterm(mode: str) -> None:
    def handler(signum: int, frame: object) -> None:
        if mode == "ignore_term" or (mode == "deaf_loading" and not READY):
            record("term_ignored")
            return
        record("term")
        for child in CHILDREN:
            child.kill()
            child.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)


def serve_until_told_to_exit(server: FakeServer) -> None:
    """Serve forever, or until $FAKE_VLLM_EXIT_AFTER chat requests arrived: then exit with status 7."""
    limit = int(os.environ.get("FAKE_VLLM_EXIT_AFTER", "0"))
    while not limit or len(server.chat_requests()) < limit:
        time.sleep(0.05)
    print(f"ERROR EngineCore died unexpectedly (fake); VLLM_API_KEY={os.environ.get('VLLM_API_KEY')}", flush=True)
    record("exit", status=7)
    os._exit(7)


def run_batch(mode: str) -> None:
    """`vllm run-batch`: after $FAKE_VLLM_DELAY seconds, answer every line of -i into -o as FakeServer answers a chat
    request (mode ok); exit with status 3 after an error line (crash); or run until stopped (never_healthy)."""
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["run-batch"])
    parser.add_argument("-i", dest="input", required=True)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    record("start", argv=sys.argv[1:], child=os.getpid(), pgid=os.getpgid(0))  # no child process of its own
    if mode == "crash":
        print("ERROR torch.OutOfMemoryError: CUDA out of memory (fake run-batch)", flush=True)
        sys.exit(3)
    while mode == "never_healthy":
        time.sleep(1)
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
    from chainette.testing import FakeServer

    answering = FakeServer(models=(args.model,))
    with open(args.input, encoding="utf-8") as lines, open(args.output, "w", encoding="utf-8") as out:
        for text in lines:
            line = json.loads(text)
            response = {"status_code": 200, "request_id": "fake", "body": answering.completion(line["body"])}
            out.write(json.dumps({"id": "vllm-fake", "custom_id": line["custom_id"], "response": response, "error": None}) + "\n")
    record("exit", status=0)


HELP_ALL = """usage: vllm serve [model_tag] [options]

options:
  --host HOST           Host name. (default: None)
  --port PORT           Port number. (default: 8000)
  --tensor-parallel-size TENSOR_PARALLEL_SIZE, -tp TENSOR_PARALLEL_SIZE
                        Number of tensor parallel groups. (default: 1)
  --gpu-memory-utilization GPU_MEMORY_UTILIZATION, --device-memory-utilization GPU_MEMORY_UTILIZATION
                        The fraction of device memory to be used. (default: 0.9)
  --enforce-eager, --no-enforce-eager
                        Always use eager-mode PyTorch. (default: False)
"""


def main() -> None:
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    if sys.argv[1:] == ["serve", "--help=all"]:
        record("help", child=os.getpid())
        print(HELP_ALL)
        return
    on_sigterm(mode)
    if sys.argv[1:2] == ["run-batch"]:
        run_batch(mode)
        return
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name")
    args, _ = parser.parse_known_args()
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    CHILDREN.append(child)
    env = {name: value for name, value in os.environ.items() if name.startswith(("CUDA_VISIBLE_DEVICES", "EXTRA_", "FAKE_VLLM_MODE"))}
    ipc = os.environ.get("VLLM_RPC_BASE_PATH")
    if ipc:
        open(os.path.join(ipc, f"fake-socket-{os.getpid()}"), "w").close()  # vLLM leaves its ZeroMQ sockets there
    record("start", argv=sys.argv[1:], env=env, api_key_set="VLLM_API_KEY" in os.environ, child=child.pid, pgid=os.getpgid(0), ipc=ipc)
    print(f"INFO fake vllm serving {args.model} in mode {mode}", flush=True)
    if mode == "crash":
        print(f"INFO [args.py:21] environment: {env} VLLM_API_KEY={os.environ.get('VLLM_API_KEY')}", flush=True)
        print("ERROR torch.OutOfMemoryError: CUDA out of memory (fake)", flush=True)
        sys.exit(3)
    if mode == "never_healthy":
        while True:
            time.sleep(1)
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
    from chainette.testing import FakeServer

    key = os.environ.get("FAKE_VLLM_API_KEY") or os.environ.get("VLLM_API_KEY")
    latency = float(os.environ.get("FAKE_VLLM_LATENCY", "0"))
    with FakeServer(models=(args.served_model_name or args.model,), port=args.port, api_key=key, latency=latency) as server:
        READY.append(True)
        record("ready", port=args.port)
        serve_until_told_to_exit(server)


if __name__ == "__main__":
    main()
