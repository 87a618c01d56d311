"""A stand-in for the `vllm` executable: `vllm serve MODEL --host H --port P [--served-model-name N] ...`.

It appends JSON events to $FAKE_VLLM_RECORD ("start" with its arguments, selected environment and
child pid; "ready"; "term" or "term_ignored" on SIGTERM), starts one child process in its process
group (so that tests see the whole group stopped), then behaves as $FAKE_VLLM_MODE says:
  ok             serve chainette.testing.FakeServer on the port after $FAKE_VLLM_DELAY seconds
  crash          print its environment (the key included, as a careless server might) and an error line,
                 and exit with status 3
  never_healthy  never listen
  ignore_term    like ok, but the process and its child ignore SIGTERM
The fake server uses $FAKE_VLLM_API_KEY, else $VLLM_API_KEY (as vLLM does), and answers after
$FAKE_VLLM_LATENCY seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

CHILD = (
    "import os, signal, time\n"
    "if os.environ.get('FAKE_VLLM_MODE') == 'ignore_term':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(600)\n"
)


def record(event: str, **fields: object) -> None:
    with open(os.environ["FAKE_VLLM_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


def on_sigterm(mode: str) -> None:
    def handler(signum: int, frame: object) -> None:
        if mode == "ignore_term":
            record("term_ignored")
            return
        record("term")
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    on_sigterm(mode)
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name")
    args, _ = parser.parse_known_args()
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    env = {name: value for name, value in os.environ.items() if name.startswith(("CUDA_VISIBLE_DEVICES", "EXTRA_", "FAKE_VLLM_MODE"))}
    record("start", argv=sys.argv[1:], env=env, api_key_set="VLLM_API_KEY" in os.environ, child=child.pid, pgid=os.getpgid(0))
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
    with FakeServer(models=(args.served_model_name or args.model,), port=args.port, api_key=key, latency=latency):
        record("ready", port=args.port)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()
