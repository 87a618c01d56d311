"""OpenTelemetry, opt-in (`telemetry=True`, `chainette run --otel`): a span for the run, one per node and one per request,
and the GenAI client metrics, through `opentelemetry-api` only (the extra `chainette-core[otel]`); whoever runs chainette
configures the SDK and its exporters (`opentelemetry-instrument`, or their own code).

The rules it keeps:

- off by default and free when off: nothing here is imported unless a run asks for it;
- requests follow the GenAI semantic conventions: a CLIENT span `chat {model}` with `gen_ai.operation.name`,
  `gen_ai.provider.name` (the backend), `gen_ai.request.model`, `gen_ai.usage.*` and `error.type`; the histograms
  `gen_ai.client.operation.duration` and `gen_ai.client.token.usage`; chainette's own counters `chainette.requests`,
  `chainette.rows` and `chainette.cost` (USD, where the engine's price is known);
- never a prompt or an answer unless `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is true, and never a secret:
  what goes out is cleared of the run's secrets first.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
import orjson

from chainette.events import Event, NodeFinished, NodeStarted, RowFailed, RunFinished, RunStarted
from chainette.pricing import Price, cost
from chainette.secrets import redact_data

if TYPE_CHECKING:
    from chainette.client import Answer, Request
    from chainette.engines import EngineConfig, EngineOptions

SCOPE = "chainette"
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
MAX_ROW_EVENTS = 100  # failed rows noted on a node's span, at most (the errors file has them all)


def capture_content() -> bool:
    """Whether prompts and answers go into the request spans (the GenAI instrumentations' own switch)."""
    return os.environ.get(CAPTURE_CONTENT, "").strip().lower() in ("1", "true", "yes")


class Telemetry:
    """One run's spans and metrics: a listener of its events (run and node spans) and the source of each engine's
    `RequestTracer`. `secrets` are cleared from every string it sends."""

    def __init__(self, secrets: frozenset[str] = frozenset()):
        self.secrets = secrets
        self.content = capture_content()
        self.tracer = trace.get_tracer(SCOPE)
        meter = metrics.get_meter(SCOPE)
        self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s", description="GenAI operation duration")
        self.tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}", description="Tokens used per request")
        self.requests = meter.create_counter("chainette.requests", unit="{request}", description="Requests sent, answered or not")
        self.rows = meter.create_counter("chainette.rows", unit="{row}", description="Rows a node decided, by outcome")
        self.spent = meter.create_counter("chainette.cost", unit="USD", description="What the answered requests cost")
        self.run: Span | None = None
        self.nodes: dict[str, Span] = {}
        self.failures: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run = self.tracer.start_span(f"chainette.run {event.chain}", attributes={"chainette.chain": event.chain})
        elif isinstance(event, NodeStarted) and self.run is not None:
            context = trace.set_span_in_context(self.run)
            attributes = {"chainette.node": event.node, "chainette.node.kind": event.kind}
            self.nodes[event.node] = self.tracer.start_span(f"chainette.node {event.node}", context=context, attributes=attributes)
        elif isinstance(event, RowFailed):
            self._row_failed(event)
        elif isinstance(event, NodeFinished):
            self._node_finished(event)
        elif isinstance(event, RunFinished):
            self._run_finished(event)

    def for_engine(self, config: EngineConfig[EngineOptions], price: Price | None) -> RequestTracer:
        """The tracer of one engine's requests (`price`: USD per million input and output tokens, if known)."""
        return RequestTracer(self, config.backend, config.model, price)

    def _row_failed(self, event: RowFailed) -> None:
        span = self.nodes.get(event.node)
        count = self.failures[event.node] = self.failures.get(event.node, 0) + 1
        if span is not None and count <= MAX_ROW_EVENTS:
            span.add_event("row failed", {"chainette.row_id": event.row_id, "error.type": event.error_type})

    def _node_finished(self, event: NodeFinished) -> None:
        stats = event.stats
        for outcome in ("ok", "failed", "filtered"):
            if stats.get(outcome):
                self.rows.add(stats[outcome], {"chainette.node": event.node, "chainette.outcome": outcome})
        span = self.nodes.pop(event.node, None)
        if span is None:
            return
        figures = {key: stats[key] for key in ("rows_in", "ok", "failed", "filtered", "input_tokens", "output_tokens") if key in stats}
        span.set_attributes({f"chainette.{key}": value for key, value in figures.items()})
        if stats.get("cost_usd") is not None:
            span.set_attribute("chainette.cost_usd", stats["cost_usd"])
        span.end()

    def _run_finished(self, event: RunFinished) -> None:
        for span in self.nodes.values():  # nodes a stop cut short
            span.end()
        self.nodes.clear()
        if self.run is None:
            return
        self.run.set_attribute("chainette.status", event.status)
        if event.status == "failed":
            self.run.set_status(Status(StatusCode.ERROR, str(event.summary.get("error") or "failed")))
        self.run.end()
        self.run = None


class RequestTracer:
    """The spans and metrics of one engine's requests, each a child of its step's node span."""

    def __init__(self, telemetry: Telemetry, backend: str, model: str, price: Price | None):
        self.telemetry = telemetry
        self.price = price
        self.attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": backend, "gen_ai.request.model": model}
        self.name = f"chat {model}"

    def started(self, request: Request) -> Span:
        """The span of `request`, begun as it is sent."""
        telemetry = self.telemetry
        parent = telemetry.nodes.get(request.step_id) or telemetry.run
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = telemetry.tracer.start_span(self.name, context=context, kind=SpanKind.CLIENT, attributes=self.attributes)
        if telemetry.content:
            span.set_attribute("gen_ai.input.messages", self._cleared(request.messages))
        telemetry.requests.add(1, self.attributes)
        return span

    def ended(self, span: Span, seconds: float, answer: Answer | None, error: BaseException | None) -> None:
        """End `span`: its usage and metrics for an `answer`, its error type for an `error`."""
        telemetry = self.telemetry
        if answer is None:
            kind = getattr(error, "kind", None) or type(error).__name__
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR))
            telemetry.duration.record(seconds, {**self.attributes, "error.type": kind})
            span.end()
            return
        usage = answer.usage
        all_input = (
            usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        )  # the conventions' input counts cached tokens in
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": all_input,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
                "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
            }
        )
        if answer.cut_off:
            span.set_attribute("gen_ai.response.finish_reasons", ["length"])
        if telemetry.content:
            span.set_attribute("gen_ai.output.messages", self._cleared([{"role": "assistant", "content": answer.text}]))
        telemetry.duration.record(seconds, self.attributes)
        telemetry.tokens.record(all_input, {**self.attributes, "gen_ai.token.type": "input"})
        telemetry.tokens.record(usage.output_tokens, {**self.attributes, "gen_ai.token.type": "output"})
        spent = cost(self.price, usage)
        if spent:
            telemetry.spent.add(spent, self.attributes)
        span.end()

    def _cleared(self, messages: list[dict[str, Any]]) -> str:
        """`messages` as JSON, cleared of the run's secrets (media parts keep only their reference)."""
        return orjson.dumps(redact_data(messages, self.telemetry.secrets)).decode()
