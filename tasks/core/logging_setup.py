"""Log configuration for web and worker: JSON lines in production, readable lines elsewhere.

Every line carries the trace id, and a line written while a job runs says
which job, type, attempt, queue and worker. Connected to Celery's
``setup_logging`` signal, so Celery leaves the root logger alone. Payloads are
never logged by Taskplane's own code.
"""

import json
import logging
import sys
import time
from typing import Any

from celery._state import get_current_task

from tasks.core.telemetry import current_trace_ids

TEXT_FORMAT = (
    "%(asctime)s %(levelname)s [%(processName)s] %(name)s "
    "trace=%(trace_id)s job=%(job_id)s: %(message)s"
)
JOB_FIELDS = ("job_id", "job_type", "attempt", "queue", "worker")


class ContextFilter(logging.Filter):
    """Adds trace and job context to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id, record.span_id = current_trace_ids()
        task = get_current_task()
        request = getattr(task, "request", None) if task is not None else None
        if request is not None and getattr(request, "id", None):
            delivery = request.delivery_info or {}
            record.job_id = request.id
            record.job_type = task.name
            record.attempt = getattr(request, "taskplane_attempt", None)
            job_type = getattr(task, "job_type", None)
            # A delayed message's routing key is the delay's binary path, not the queue.
            record.queue = job_type.queue if job_type else delivery.get("routing_key")
            record.worker = request.hostname
        else:
            for name in JOB_FIELDS:
                setattr(record, name, None)
            record.job_id = "-"
        return True


class HideReturnValues(logging.Filter):
    """Celery logs every job's return value on success; results may hold user data."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": "(not logged)"}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", "-"),
            "span_id": getattr(record, "span_id", "-"),
            "process": record.processName,
        }
        for name in (*JOB_FIELDS, "request_id"):
            value = getattr(record, name, None)
            if value not in (None, "-"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(loglevel: Any = None, *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler.addFilter(HideReturnValues())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(loglevel or logging.INFO)
    # OpenTelemetry's Celery instrumentation warns on every retry that it had to
    # stringify kombu's Exchange for a span attribute; it does so correctly.
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)
