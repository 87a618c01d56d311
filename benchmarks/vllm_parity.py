"""Chainette over HTTP (`vllm serve` and the vllm backend) against vLLM in-process (`vllm.LLM.chat`): the same
model, prompts, JSON schema and sampling, measured one after the other in one run, as rows/s and output tokens/s.
Prints both and their ratio (the goal is >= 0.8 of in-process), and, to tell where a difference goes, a bare httpx2
client sending the same requests to the same server: the cost of serving over HTTP, chainette's own cost apart.
vLLM is never imported here: the in-process side runs in the vLLM venv's own python.

Usage: python benchmarks/vllm_parity.py --vllm-bin .real-vllm/venv/bin --model .real-vllm/model [--rows 256]
(`bash scripts/real-vllm.sh` builds that venv and the tiny model; on a GPU box, give a real model and drop --cpu.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Any, TypedDict

from pydantic import BaseModel

SYSTEM = "You label product reviews. Answer with JSON."
MAX_TOKENS = 40
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
STRUCTURED = {"backend": "xgrammar", "disable_any_whitespace": True}
IN_PROCESS = """
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams

setup = json.loads(sys.argv[1])
llm = LLM(model=setup["model"], dtype="bfloat16", max_model_len=512, structured_outputs_config=setup["structured"])
params = SamplingParams(max_tokens=setup["max_tokens"], temperature=0, structured_outputs=StructuredOutputsParams(json=setup["schema"]))
chats = [[{"role": "system", "content": setup["system"]}, {"role": "user", "content": text}] for text in setup["texts"]]
llm.chat(chats[:8], params, use_tqdm=False)
started = time.perf_counter()
outputs = llm.chat(chats, params, use_tqdm=False)
seconds = time.perf_counter() - started
print("RESULT " + json.dumps({"rows": len(outputs), "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs), "seconds": seconds}))
"""


class Measured(TypedDict):
    """One side's run: rows answered, output tokens and seconds."""

    rows: int
    output_tokens: int
    seconds: float


def texts(rows: int) -> list[str]:
    return [f"Review number {index}: the kettle was fine, a bit loud." for index in range(rows)]


def verdict_model() -> type[BaseModel]:
    """The output model: short answers (a tiny random model fills any free string up to max_tokens)."""
    from typing import Literal

    class Verdict(BaseModel):
        label: Literal["positive", "negative"]
        sure: bool

    return Verdict


def schema() -> dict[str, Any]:
    from chainette.schema import json_schema

    return json_schema(verdict_model())


def in_process(vllm_bin: Path, model: str, rows: int) -> Measured:
    """rows, output tokens and seconds of `vllm.LLM.chat` over the rows (after a warm-up), in the vLLM venv."""
    setup = {"model": model, "texts": texts(rows), "schema": schema(), "system": SYSTEM, "max_tokens": MAX_TOKENS, "structured": STRUCTURED}
    done = subprocess.run(
        [str(vllm_bin / "python"), "-c", IN_PROCESS, json.dumps(setup)],
        env={**os.environ, **CPU_ENV},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    result = next((line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if result is None:
        raise SystemExit(f"the in-process run failed:\n{done.stderr[-3000:]}")
    measured: Measured = json.loads(result)
    return measured


def over_http(vllm_bin: Path, model: str, rows: int) -> tuple[Measured, Measured]:
    """rows, output tokens and seconds of a chainette run over the rows against `vllm serve` (started first, warmed
    up), and of the bare client's run against the same server."""
    from chainette import Chain, SamplingParams, Step, register_engine
    from chainette_vllm.process import free_port

    class Review(BaseModel):
        text: str

    Verdict = verdict_model()
    port = free_port()
    flags = ["--dtype", "bfloat16", "--max-model-len", "512", "--structured-outputs-config", json.dumps(STRUCTURED)]
    command = [str(vllm_bin / "vllm"), "serve", model, "--host", "127.0.0.1", "--port", str(port), *flags]
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "serve.log", "wb") as log:
        server = subprocess.Popen(command, env={**os.environ, **CPU_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", server)
            register_engine("llm", backend="vllm", model=model, endpoint=f"http://127.0.0.1:{port}/v1")
            sampling = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
            step = Step(
                id="verdict",
                input_model=Review,
                output_model=Verdict,
                engine_name="llm",
                system_prompt=SYSTEM,
                user_prompt="{{text}}",
                sampling=sampling,
                output_format_instruction="",
            )
            chain = Chain(name="parity", steps=[step])
            inputs = [{"text": text} for text in texts(rows)]
            chain.run(inputs[:8], output_dir=Path(folder) / "warm", cache=False, progress=False)
            started = time.perf_counter()
            result = chain.run(inputs, output_dir=Path(folder) / "run", cache=False, progress=False)
            seconds = time.perf_counter() - started
            figures = result.stats["steps"]["verdict"]
            bare = asyncio.run(bare_client(f"http://127.0.0.1:{port}/v1", model, rows))
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)
    return {"rows": figures["ok"], "output_tokens": figures["output_tokens"], "seconds": seconds}, bare


async def bare_client(base: str, model: str, rows: int, in_flight: int = 256) -> Measured:
    """The same requests from a bare httpx2 client, `in_flight` at a time (chainette's vllm default)."""
    import httpx2

    response_format = {"type": "json_schema", "json_schema": {"name": "Verdict", "schema": schema()}}
    bodies = [
        {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "response_format": response_format,
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
        }
        for text in texts(rows)
    ]
    slots = asyncio.Semaphore(in_flight)
    tokens = 0
    async with httpx2.AsyncClient(base_url=base, timeout=600, limits=httpx2.Limits(max_connections=in_flight)) as http:

        async def send(body: dict[str, Any]) -> None:
            nonlocal tokens
            async with slots:
                answer = (await http.post("/chat/completions", json=body)).json()
            tokens += answer["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(send(body) for body in bodies))
        seconds = time.perf_counter() - started
    return {"rows": rows, "output_tokens": tokens, "seconds": seconds}


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    import httpx2

    from chainette_vllm.process import healthy

    deadline = time.monotonic() + 900
    with httpx2.Client(timeout=2.0, trust_env=False) as http:
        while not healthy(http, url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("vllm serve exited or did not become healthy while starting")
            time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-bin", type=Path, required=True, help="the folder of the vLLM venv's python and vllm")
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("CHAINETTE_LOAD_PLUGINS", "vllm")
    local = in_process(args.vllm_bin, args.model, args.rows)
    http, bare = over_http(args.vllm_bin, args.model, args.rows)
    print(f"{'':28}{'rows/s':>12}{'output tok/s':>16}{'rows':>8}{'tokens':>10}")
    for name, run in (("vllm.LLM.chat in-process", local), ("chainette over HTTP", http), ("bare httpx2 over HTTP", bare)):
        print(
            f"{name:28}{run['rows'] / run['seconds']:>12,.1f}{run['output_tokens'] / run['seconds']:>16,.1f}{run['rows']:>8}{run['output_tokens']:>10}"
        )
    ratio = (http["output_tokens"] / http["seconds"]) / (local["output_tokens"] / local["seconds"])
    print(f"ratio (output tokens/s, chainette / in-process): {ratio:.2f}  goal >= 0.80: {'met' if ratio >= 0.8 else 'NOT MET'}")
    own = (http["output_tokens"] / http["seconds"]) / (bare["output_tokens"] / bare["seconds"])
    print(f"ratio (output tokens/s, chainette / bare client on the same server): {own:.2f}")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rows} rows, max_tokens {MAX_TOKENS}")


if __name__ == "__main__":
    main()
