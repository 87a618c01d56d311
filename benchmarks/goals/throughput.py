"""Goal 1: each HTTP backend against the bare client it is built on, on the same fake server (50 ms, 64 in flight):
vllm >= 95 % of httpx2 (issue 25), openai >= 80 % of the AsyncOpenAI SDK, ollama >= 80 % of httpx2 (rounds interleaved,
best of three)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import json
import time
from typing import Any

from chains import LABEL, labelling
from harness import IN_FLIGHT, LATENCY, Figure, Outcome, best_of, full_rate, server

PAYLOAD_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
    "required": ["label", "score"],
}
PAIRS = (
    ("chainette vllm", "httpx2 (OpenAI format)", 0.95),
    ("chainette openai", "AsyncOpenAI SDK", 0.8),
    ("chainette ollama", "httpx2 (Ollama format)", 0.8),
)
"""Each backend, the bare client it is measured against, and the share of that client's rate it must reach."""


def measure(count: int) -> Outcome:
    """Each backend and each bare client sending `count` requests, three rounds, best of three."""
    with server(LATENCY) as url:
        best = best_of(
            3,
            {
                "httpx2 (OpenAI format)": lambda: asyncio.run(bare_httpx2(url, count, ollama=False)),
                "chainette vllm": lambda: full_rate(labelling("vllm", f"{url}/v1", IN_FLIGHT), LABEL, count),
                "AsyncOpenAI SDK": lambda: asyncio.run(bare_openai(url, count)),
                "chainette openai": lambda: full_rate(labelling("openai", f"{url}/v1", IN_FLIGHT), LABEL, count),
                "httpx2 (Ollama format)": lambda: asyncio.run(bare_httpx2(url, count, ollama=True)),
                "chainette ollama": lambda: full_rate(labelling("ollama", url, IN_FLIGHT), LABEL, count),
            },
        )
    return Outcome(
        tuple(
            Figure(
                f"1. {name} vs {base} (50 ms, {IN_FLIGHT} in flight)",
                best[name],
                best[base],
                f">= {share:.0%} of baseline",
                best[name] >= share * best[base],
            )
            for name, base, share in PAIRS
        )
    )


def messages(index: int) -> list[dict[str, str]]:
    """The chat of request `index`, as the chain's step renders it."""
    return [{"role": "user", "content": f"Classify review number {index}: it was fine."}]


async def pump(count: int, send: Callable[[int], Awaitable[None]]) -> float:
    """rows/s of `count` calls of `send(i)`, IN_FLIGHT at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await send(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return count / (time.perf_counter() - started)


async def bare_httpx2(url: str, count: int, ollama: bool) -> float:
    """rows/s of a bare httpx2 client asking for JSON in the OpenAI wire format, or Ollama's, and parsing it."""
    import httpx2

    limits = httpx2.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def send(index: int) -> None:
            if ollama:
                body: dict[str, Any] = {"model": "fake-model", "messages": messages(index), "stream": False, "format": PAYLOAD_SCHEMA}
                answer = (await client.post("/api/chat", json=body)).json()
                json.loads(answer["message"]["content"])
            else:
                body = {
                    "model": "fake-model",
                    "messages": messages(index),
                    "response_format": {"type": "json_schema", "json_schema": {"name": "Label", "schema": PAYLOAD_SCHEMA}},
                }
                answer = (await client.post("/v1/chat/completions", json=body)).json()
                json.loads(answer["choices"][0]["message"]["content"])

        return await pump(count, send)


async def bare_openai(url: str, count: int) -> float:
    """rows/s of the AsyncOpenAI SDK asking for strict JSON and parsing it."""
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    client = openai.AsyncOpenAI(
        api_key="none", base_url=f"{url}/v1", max_retries=0, http_client=httpx2.AsyncClient(limits=limits, timeout=60)
    )
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "Label", "schema": PAYLOAD_SCHEMA, "strict": True}}

    async def send(index: int) -> None:
        completion = await client.chat.completions.create(model="fake-model", messages=messages(index), response_format=response_format)  # type: ignore[arg-type]
        json.loads(completion.choices[0].message.content or "")

    try:
        return await pump(count, send)
    finally:
        await client.close()
