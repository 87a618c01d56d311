"""OpenTelemetry, opt-in: run, node and request spans following the GenAI conventions, their metrics, no prompt or
answer unless asked and never a secret, nothing imported when off. Checked with the SDK's in-memory exporter and
reader (the SDK is a test dependency; chainette itself needs only opentelemetry-api)."""

from __future__ import annotations

import json

from pydantic import BaseModel
import pytest

from chainette import Chain, ConfigError, RowError, Step, register_engine

from .test_import import imported_after

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

SECRET = "sk-telemetry-0123456789abcdef"
EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA})


@pytest.fixture(scope="module", autouse=True)
def providers():
    """The process's tracer and meter providers (set once: OpenTelemetry allows no second)."""
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))


@pytest.fixture(autouse=True)
def clear():
    EXPORTER.clear()
    READER.get_metrics_data()  # the reader reports deltas: each test's sums start afresh


class Review(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def chain() -> Chain:
    first = Step(id="first", input_model=Review, output_model=Label, engine_name="llm", user_prompt="Label {{text}}")
    second = Step(id="second", output_model=Label, engine_name="llm", user_prompt="Check {{label}}")
    return Chain(name="traced", steps=[first, second])


def run(scripted, tmp_path, rows: list[dict], answer=None):
    scripted(answer or (lambda request, attempt: json.dumps({"label": "ok"})))
    register_engine("llm", backend="scripted", model="m1", api_key=SECRET, price_per_million_input=1.0, price_per_million_output=2.0)
    return again(tmp_path, rows)


def again(tmp_path, rows: list[dict]):
    return chain().run(rows, output_dir=tmp_path / "out", telemetry=True, cache=False)


def spans_named(prefix: str):
    return [span for span in EXPORTER.get_finished_spans() if span.name.startswith(prefix)]


def metric_points(data, name: str) -> list:
    """The points of metric `name` in one collection of the reader (each collection holds what came since the last)."""
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_a_run_has_a_span_per_node_and_a_client_span_per_request(scripted, tmp_path):
    result = run(scripted, tmp_path, [{"text": f"r{i}"} for i in range(5)])
    (run_span,) = spans_named("chainette.run")
    nodes = {span.attributes["chainette.node"]: span for span in spans_named("chainette.node")}
    requests = spans_named("chat ")
    assert set(nodes) == {"chain_input", "first", "second"}
    assert all(span.parent.span_id == run_span.context.span_id for span in nodes.values())
    assert len(requests) == 10 == result.stats["steps"]["first"]["requests"] + result.stats["steps"]["second"]["requests"]
    by_parent = {node: [r for r in requests if r.parent.span_id == span.context.span_id] for node, span in nodes.items()}
    assert len(by_parent["first"]) == len(by_parent["second"]) == 5
    request = requests[0]
    assert request.name == "chat m1" and request.kind == SpanKind.CLIENT
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.provider.name"] == "scripted"
    assert request.attributes["gen_ai.request.model"] == "m1"
    assert nodes["first"].attributes["chainette.ok"] == 5
    assert run_span.attributes["chainette.status"] == "completed"


def test_token_and_cost_metrics_add_up_to_the_run_figures(scripted, tmp_path):
    result = run(scripted, tmp_path, [{"text": f"r{i}"} for i in range(4)])
    figures = result.stats["steps"]
    data = READER.get_metrics_data()
    tokens = {point.attributes["gen_ai.token.type"]: point.sum for point in metric_points(data, "gen_ai.client.token.usage")}
    assert tokens["input"] == sum(f["input_tokens"] for f in figures.values())
    assert tokens["output"] == sum(f["output_tokens"] for f in figures.values())
    (spent,) = metric_points(data, "chainette.cost")
    assert spent.value == pytest.approx(sum(f["cost_usd"] for f in figures.values()))
    assert sum(point.count for point in metric_points(data, "gen_ai.client.operation.duration")) == 8


def test_a_failed_request_has_its_error_type(scripted, tmp_path):
    answer = lambda request, attempt: RowError("no such thing", kind="http_400") if "r1" in str(request.messages) else '{"label": "ok"}'  # noqa: E731
    run(scripted, tmp_path, [{"text": f"r{i}"} for i in range(3)], answer=answer)
    failed = [span for span in spans_named("chat ") if span.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes["error.type"] == "http_400"
    (first,) = [span for span in spans_named("chainette.node") if span.attributes["chainette.node"] == "first"]
    assert [event.name for event in first.events] == ["row failed"]


def test_no_prompt_or_answer_unless_asked_and_never_a_secret(scripted, tmp_path, monkeypatch):
    run(scripted, tmp_path / "quiet", [{"text": f"about {SECRET}"}])
    assert not any("gen_ai.input.messages" in span.attributes for span in spans_named("chat "))
    EXPORTER.clear()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    again(tmp_path / "told", [{"text": f"about {SECRET}"}])
    captured = [span.attributes["gen_ai.input.messages"] for span in spans_named("chat ")]
    assert captured and all("Label" in text or "Check" in text for text in captured)
    everything = json.dumps([dict(span.attributes) for span in EXPORTER.get_finished_spans()], default=str)
    assert SECRET not in everything and "**********" in everything


def test_off_by_default_imports_nothing_of_opentelemetry(tmp_path):
    code = (
        "from pydantic import BaseModel\nfrom chainette import Chain, Step, register_engine\n"
        "class M(BaseModel):\n    text: str\n"
        "register_engine('e', backend='fake', model='m')\n"
        "step = Step(id='s', input_model=M, output_model=M, engine_name='e', user_prompt='{{text}}')\n"
        f"Chain(name='c', steps=[step]).run([{{'text': 'a'}}], output_dir={str(tmp_path / 'o')!r}, progress=False)"
    )
    assert "opentelemetry" not in imported_after(code)


def test_without_opentelemetry_a_run_asking_for_it_says_what_to_install(scripted, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "chainette.telemetry", None)
    with pytest.raises(ConfigError, match=r'pip install "chainette-core\[otel\]"'):
        run(scripted, tmp_path, [{"text": "a"}])
    assert not (tmp_path / "out").exists(), "refused before the output directory is made"
