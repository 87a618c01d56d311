"""The Ollama backend end to end against the loopback FakeServer: real HTTP, real chains."""

from __future__ import annotations

import asyncio
import json
import socket

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, SamplingParams, Step, apply, register_engine
from chainette.client import Request
from chainette.errors import EngineError, RetryableError, RowError
from chainette.testing import FakeServer
from chainette.testing.server import Fault
from chainette_ollama.client import OllamaClient

MODEL = "llama3.2"
WORDS = ["alpha", "bravo", "bad", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]


class Item(BaseModel):
    word: str


class Shout(BaseModel):
    loud: str


class Count(BaseModel):
    n: int


class Reverse(BaseModel):
    rev: str


class Tag(BaseModel):
    tag: str


class Summary(BaseModel):
    line: str


@pytest.fixture
def server():
    with FakeServer(models=(MODEL,)) as fake:
        yield fake


def first_user_message(body):
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def respond(body):
    """Answer from the row's own words, so that a misaligned answer shows; 'BAD' never gets a valid Count."""
    user = first_user_message(body)
    word = user.split()[-1]
    title = body["format"]["title"]
    if title == "Shout":
        return json.dumps({"loud": word.upper()})
    if title == "Count":
        return "no JSON here" if word == "BAD" else json.dumps({"n": len(word)})
    if title == "Reverse":
        return json.dumps({"rev": word[::-1]})
    return json.dumps({"line": user})


def request(text="hello"):
    return Request(messages=[{"role": "user", "content": text}], schema=Summary.model_json_schema(), schema_name="Summary", row_id=text)


async def ask(url, req=None, model=MODEL, **options):
    client = OllamaClient(register_engine("local", backend="ollama", model=model, endpoint=url, **options))
    try:
        return await client.complete(req or request())
    finally:
        await client.aclose()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_answer_usage_and_reasoning_over_http():
    with FakeServer(models=(MODEL,), reasoning="I considered it.") as fake:
        answer = await ask(fake.base_url, think=True)
        body = fake.chat_requests()[0]
    assert Summary.model_validate_json(answer.text)
    assert answer.reasoning == "I considered it."
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 7)
    assert (body["stream"], body["think"], body["format"]["title"]) == (False, True, "Summary")


async def test_concurrent_requests_get_their_own_answers(server):
    server.respond = lambda body: json.dumps({"line": first_user_message(body)})
    server.latency = 0.02
    client = OllamaClient(register_engine("local", backend="ollama", model=MODEL, endpoint=server.base_url))
    try:
        answers = await asyncio.gather(*(client.complete(request(f"row {i}")) for i in range(20)))
    finally:
        await client.aclose()
    assert [json.loads(a.text)["line"] for a in answers] == [f"row {i}" for i in range(20)]
    assert server.max_in_flight <= 4


async def test_missing_model_is_an_engine_error_with_the_pull_hint(server):
    with pytest.raises(EngineError) as caught:
        await ask(server.base_url, model="mistral:7b")
    assert caught.value.kind == "not_found"
    assert "model 'mistral:7b' not found" in str(caught.value)
    assert "`ollama pull mistral:7b`" in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "error", "kind"),
    [
        (Fault(status=401, body={"error": "unauthorized"}), EngineError, "authentication"),
        (Fault(status=403, body={"error": "forbidden"}), EngineError, "authentication"),
        (Fault(status=400, body={"error": "invalid format"}), RowError, "http_400"),
        (Fault(status=500, body={"error": "llama runner process has terminated"}), RetryableError, "http_500"),
        (
            Fault(status=503, body={"error": "server busy, please try again.  maximum pending requests exceeded"}),
            RetryableError,
            "http_503",
        ),
    ],
)
async def test_http_errors_are_classified(server, fault, error, kind):
    server.fail_next(fault)
    with pytest.raises(error) as caught:
        await ask(server.base_url)
    assert caught.value.kind == kind
    assert fault.body["error"] in str(caught.value)
    assert error is RetryableError or not isinstance(caught.value, RetryableError)


async def test_429_carries_retry_after(server):
    server.fail_next(Fault(status=429, retry_after=3))
    with pytest.raises(RetryableError) as caught:
        await ask(server.base_url)
    assert (caught.value.kind, caught.value.retry_after) == ("http_429", 3.0)


async def test_timeout_is_retryable(server):
    server.fail_next(Fault(hang=1.0))
    with pytest.raises(RetryableError) as caught:
        await ask(server.base_url, timeout=0.2)
    assert caught.value.kind == "timeout"


async def test_connection_refused_is_retryable():
    with pytest.raises(RetryableError) as caught:
        await ask(f"http://127.0.0.1:{closed_port()}")
    assert caught.value.kind == "connection"


def tag(item: Shout) -> Tag:
    return Tag(tag=f"<{item.loud}>")


def build_chain():
    upper = Step(
        id="upper",
        input_model=Item,
        output_model=Shout,
        engine_name="local",
        user_prompt="Shout the word {{ word }}",
        sampling=SamplingParams(temperature=0, max_tokens=50),
    )
    count = Step(id="count", output_model=Count, engine_name="local", user_prompt="Count the letters of {{ upper.loud }}")
    reverse = Step(id="reverse", output_model=Reverse, engine_name="local", user_prompt="Reverse {{ upper.loud }}")
    summary = Step(
        id="summary",
        output_model=Summary,
        engine_name="local",
        user_prompt="Summary {{ chain_input.word }} {{ counted.n }} {{ reversed.rev }} {{ tag.tag }}",
    )
    branches = [Branch("letters", [count]).join("counted"), Branch("mirror", [reverse]).join("reversed")]
    return Chain(name="ollama-loopback", steps=[upper, branches, apply(tag, output_model=Tag), summary])


def test_chain_rows_stay_aligned_through_steps_branches_and_apply(server, tmp_path, monkeypatch):
    server.respond = respond
    monkeypatch.setenv("OLLAMA_HOST", server.base_url.removeprefix("http://"))
    register_engine("local", backend="ollama_api", model=MODEL, keep_alive="1m", max_concurrency=3)

    result = build_chain().run([{"word": w} for w in WORDS], output_dir=tmp_path / "run")

    bad = str(WORDS.index("bad"))
    good = [(str(i), w) for i, w in enumerate(WORDS) if w != "bad"]
    assert [s.loud for s in result["upper"]] == [w.upper() for w in WORDS]
    assert [(r["row_id"], r["n"]) for r in result.records("count")] == [(i, len(w)) for i, w in good]
    assert [(r["row_id"], r["rev"]) for r in result.records("reverse")] == [(str(i), w.upper()[::-1]) for i, w in enumerate(WORDS)]
    assert [(r["row_id"], r["line"]) for r in result.records("summary")] == [
        (i, f"Summary {w} {len(w)} {w.upper()[::-1]} <{w.upper()}>") for i, w in good
    ]
    assert [(e["row_id"], e["step_id"], e["error_type"]) for e in result.errors] == [(bad, "count", "validation")]

    flat = result.flattened
    assert [row["row_id"] for row in flat] == [i for i, _ in good]
    for row, (_, word) in zip(flat, good, strict=True):
        assert row["chain_input.word"] == word
        assert row["upper.loud"] == word.upper()
        assert (row["counted.n"], row["reversed.rev"], row["tag.tag"]) == (len(word), word.upper()[::-1], f"<{word.upper()}>")
        assert row["summary.line"].startswith(f"Summary {word} ")

    bodies = server.chat_requests()
    assert len(bodies) == 12 * 3 + 1 + 11
    assert all(b["model"] == MODEL and b["stream"] is False and b["keep_alive"] == "1m" for b in bodies)
    shouts = [b for b in bodies if b["format"]["title"] == "Shout"]
    assert all(b["options"] == {"temperature": 0.0, "num_predict": 50} for b in shouts)
    assert all("options" not in b for b in bodies if b["format"]["title"] != "Shout")
    assert server.max_in_flight <= 3
    steps = result.stats["steps"]
    assert (steps["upper"]["input_tokens"], steps["upper"]["output_tokens"]) == (11 * 12, 7 * 12)
    assert steps["count"]["failed"] == 1


def test_chain_with_a_missing_model_stops_with_the_pull_hint(server, tmp_path):
    register_engine("local", backend="ollama", model="not-pulled", endpoint=server.base_url)
    chain = Chain(name="missing", steps=[Step(id="s", input_model=Item, output_model=Shout, engine_name="local", user_prompt="{{ word }}")])
    with pytest.raises(EngineError, match="ollama pull not-pulled"):
        chain.run([{"word": "a"}], output_dir=tmp_path / "run")
