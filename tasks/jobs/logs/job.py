"""Handler of logs.summarize: fetch (streaming, bounded) and summarise."""

from collections.abc import Iterator
from typing import Any

import httpx

from tasks.core.errors import PermanentError, TransientError
from tasks.jobs.logs.schema import LogsPayload
from tasks.jobs.logs.summary import LineLimitExceeded, bounded_lines, summarize
from tasks.jobs.outbound_http import classify, ensure_allowed
from tasks.runtime.effects import JobContext

MAX_LOG_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def summarize_log(payload: LogsPayload, context: JobContext) -> dict[str, Any]:
    if payload.lines is not None:
        return summarize(payload.lines, top_errors=payload.top_errors)
    ensure_allowed(str(payload.url), context.settings)
    try:
        with (
            context.http_client() as client,
            client.stream("GET", str(payload.url), timeout=FETCH_TIMEOUT) as response,
        ):
            classify(response.status_code, response.headers.get("Retry-After"))
            lines = bounded_lines(response.iter_bytes(), max_bytes=MAX_LOG_BYTES)
            return summarize(_reraising(lines), top_errors=payload.top_errors)
    except httpx.TimeoutException as exc:
        raise TransientError(f"timed out fetching the log: {exc}") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"could not fetch the log: {exc}") from exc


def _reraising(lines: Iterator[str]) -> Iterator[str]:
    """A log over the size bound is a permanent problem: fetching again won't shrink it."""
    try:
        yield from lines
    except LineLimitExceeded as exc:
        raise PermanentError(f"log is larger than {MAX_LOG_BYTES} bytes") from exc
