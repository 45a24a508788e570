"""Request ids, trace context and request logging for the web.

Each request gets a server span that continues W3C ``traceparent`` (or starts
a new trace; app/tracing.py); the job's message carries that context, so
workers log the same ``trace_id``. Each
response echoes ``X-Request-ID`` (the client's, if it sent a sane one).
"""

import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

from app import tracing
from app.context import celery_of
from tasks.core.logging_setup import configure_logging
from tasks.core.telemetry import configure_tracing

logger = logging.getLogger("taskplane.http")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id") if has_request_context() else None
        return True


def init_app(app: Flask, *, configure_logs: bool = False) -> None:
    configure_tracing("taskplane-web")
    # No Celery instrumentation here: the web never publishes through Celery
    # (tasks/core/publisher injects the trace context into each job itself),
    # and the instrumentation with the metrics SDK it loads is ~40 modules.
    tracing.init_app(app)
    if configure_logs:
        configure_logging(json_lines=bool(celery_of(app).conf.taskplane_log_json))
        for handler in logging.getLogger().handlers:
            handler.addFilter(RequestIdFilter())
    app.before_request(_assign_request_id)
    app.after_request(_finish)


def _assign_request_id() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    if response.status_code < 400:
        # Flask-Limiter adds Retry-After to every response; it only means
        # something on a 429 or 503.
        response.headers.pop("Retry-After", None)
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    started = g.get("request_started")
    elapsed_ms = (time.perf_counter() - started) * 1000 if started else 0.0
    logger.info("%s %s %s %.1fms", request.method, request.path, response.status_code, elapsed_ms)
    return response
