"""Handler of webhook.deliver: one POST per attempt, classified for the retry policy."""

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tasks.base import JobContext
from tasks.errors import PermanentError, TransientError
from tasks.netpolicy import UrlNotAllowed, policy_for
from tasks.webhooks.schema import WebhookPayload

# Answers worth another attempt: the server is overloaded, slow or broken now.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "Taskplane-Webhook/1"


def deliver(payload: WebhookPayload, context: JobContext) -> dict[str, Any]:
    """POST once per attempt; a job that already delivered does not deliver again."""
    ensure_allowed(str(payload.url), context.settings)
    outcome = context.once("delivered", lambda: _post(payload, context.job_id))
    return {**outcome, "attempts": context.attempt}


def _post(payload: WebhookPayload, job_id: str) -> dict[str, Any]:
    headers = {
        "User-Agent": USER_AGENT,
        **payload.headers,
        "Content-Type": "application/json",
        "Idempotency-Key": job_id,
    }
    started = time.monotonic()
    try:
        response = httpx.post(
            str(payload.url),
            json=payload.body,
            headers=headers,
            timeout=payload.timeout_s,
            follow_redirects=False,
        )
    except httpx.TimeoutException as exc:
        raise TransientError(f"timed out after {payload.timeout_s}s: {exc}") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"could not reach the target: {exc}") from exc
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    classify(response.status_code, response.headers.get("Retry-After"))
    return {"status_code": response.status_code, "elapsed_ms": elapsed_ms}


def ensure_allowed(url: str, settings: Any) -> None:
    """Check the URL policy again where the connection is made (names can be re-pointed)."""
    try:
        policy_for(settings).check_url(url)
    except UrlNotAllowed as exc:
        raise PermanentError(f"URL not allowed: {exc}") from exc


def classify(status: int, retry_after_header: str | None) -> None:
    """Raise unless the status means delivered (2xx)."""
    if 200 <= status < 300:
        return
    if status in RETRYABLE_STATUS or status >= 500:
        raise TransientError(
            f"target answered {status}", retry_after=parse_retry_after(retry_after_header)
        )
    raise PermanentError(f"target answered {status}; not retrying a client error")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
