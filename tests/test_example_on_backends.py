"""The reviews example runs unchanged on every first-party backend against the loopback fake server (the Messages API
stand-in for anthropic), with each row's answers aligned to its input (the engine is swapped by an engines YAML file)."""

from __future__ import annotations

import json
from pathlib import Path
import re

import pytest

from chainette.cli import main
from chainette.testing import FakeServer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "reviews"
ENGINES = {
    "openai": "    endpoint: {url}/v1\n    api_key_env: EXAMPLE_TEST_KEY\n",
    "vllm": "    endpoint: {url}/v1\n",
    "ollama": "    endpoint: {url}\n",
    "anthropic": "    endpoint: {url}\n    api_key_env: EXAMPLE_TEST_KEY\n",
}
KEYED = ("openai", "anthropic")


def echo_review(body: dict) -> str:
    """Answer from the schema's fields, quoting the review in the prompt so alignment can be checked."""
    prompt = body["messages"][-1]["content"]
    review = re.search(r"(?:Review|review into \w+): (.*)", prompt).group(1)
    fields = json.dumps(body.get("response_format") or body.get("format") or body.get("output_config"))
    if '"sentiment"' in fields:
        return json.dumps({"sentiment": "mixed", "confidence": 0.9})
    if '"translation"' in fields:
        return json.dumps({"translation": f"[{review}]"})
    return json.dumps({"headline": f"<{review}>", "keywords": ["k"]})


@pytest.mark.parametrize("backend", sorted(ENGINES))
def test_reviews_example_on_backend(backend, tmp_path, monkeypatch):
    pytest.importorskip(f"chainette_{backend}")
    monkeypatch.setenv("EXAMPLE_TEST_KEY", "sk-example-test")
    server_class = pytest.importorskip("chainette_anthropic.testing").FakeAnthropic if backend == "anthropic" else FakeServer
    with server_class(respond=echo_review, api_key="sk-example-test" if backend in KEYED else None) as server:
        engines = tmp_path / "engines.yaml"
        extra = ENGINES[backend].format(url=server.base_url)
        engines.write_text(f"engines:\n  - name: llm\n    backend: {backend}\n    model: fake-model\n{extra}")
        out = tmp_path / "out"
        args = ["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(out), "--engines", str(engines)]
        assert main(args) == 0
        assert len(server.chat_requests()) == 6 + 3 * 6
    rows = [json.loads(line) for line in (out / "flattened" / "000.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        text = row["chain_input.text"]
        assert row["fr.translation"] == row["de.translation"] == f"[{text}]"
        assert row["summary.headline"] == f"<{text}>"
    assert (out / "errors.jsonl").read_text() == ""
