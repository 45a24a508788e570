"""A server span per HTTP request, with OpenTelemetry's API and SDK.

What the web needs from tracing is the trace context: continue the caller's
W3C ``traceparent`` (or start a trace), make the request's span current so
its ids reach the log lines and the job messages (tasks/core/publisher injects
it), and export the span when OTLP is configured.

OpenTelemetry's Flask instrumentation did this and more: it wraps the WSGI
app and ``start_response``, reads the whole environ into semantic-convention
attributes and records request metrics (which /metrics already has). This
module instead cost ~18% less gunicorn CPU per submit (1.92 → 1.57 ms,
measured from /proc over three alternating wrk rounds each way), so the span
is made here, with the attributes the HTTP semantic conventions require.
"""

from flask import Flask, Response, g, request
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

# Probes and scrapes: frequent, and nothing to trace.
UNTRACED_PATHS = frozenset({"/health/live", "/metrics"})


def init_app(app: Flask) -> None:
    tracer = trace.get_tracer("taskplane.web")

    def start_span() -> None:
        if request.path in UNTRACED_PATHS:
            return
        parent = propagate.extract(request.headers)
        route = request.url_rule.rule if request.url_rule is not None else None
        span = tracer.start_span(
            f"{request.method} {route}" if route else request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "url.scheme": request.scheme,
                **({"http.route": route} if route else {}),
            },
        )
        g.trace_span = span
        g.trace_token = context.attach(trace.set_span_in_context(span, parent))

    def record_status(response: Response) -> Response:
        span = g.get("trace_span")
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        return response

    def end_span(exc: BaseException | None) -> None:
        span = g.pop("trace_span", None)
        if span is None:
            return
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        context.detach(g.pop("trace_token"))

    # First in, last out: every other hook runs inside the request's span.
    app.before_request_funcs.setdefault(None, []).insert(0, start_span)
    app.after_request(record_status)
    app.teardown_request(end_span)
