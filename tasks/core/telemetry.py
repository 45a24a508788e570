"""Trace context with OpenTelemetry: one trace from the HTTP request to every job attempt.

The SDK is always on, so a request without ``traceparent`` still starts a
trace whose id lands in the job's message headers and in every log line.
Spans are exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP
over HTTP); otherwise nothing is exported and the cost is a few id
generations per request. OpenTelemetry keeps its tracer provider in its own
global, set once per process here.
"""

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"


def configure_tracing(default_service_name: str) -> None:
    """Install the SDK tracer provider for this process, once."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    name = os.environ.get(_SERVICE_NAME_ENV, default_service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def current_trace_ids() -> tuple[str, str]:
    """(trace_id, span_id) of the active span as hex, or ("-", "-") outside any trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "-", "-"
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def instrument_worker_process() -> None:
    """In each worker process (after the fork): trace every task, continue incoming context."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    configure_tracing("taskplane-worker")
    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
