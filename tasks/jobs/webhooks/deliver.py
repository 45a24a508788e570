"""Handler of webhook.deliver: one POST per attempt, classified for the retry policy."""

import time
from typing import Any

import httpx

from tasks.core.errors import TransientError
from tasks.core.json_body import body_bytes
from tasks.jobs.outbound_http import classify, ensure_allowed
from tasks.jobs.webhooks.schema import WebhookPayload
from tasks.runtime.effects import JobContext

USER_AGENT = "Taskplane-Webhook/1"


def deliver(payload: WebhookPayload, context: JobContext) -> dict[str, Any]:
    """POST once per attempt; a job that already delivered does not deliver again."""
    ensure_allowed(str(payload.url), context.settings)
    outcome = context.once("delivered", lambda: _post(payload, context))
    return {**outcome, "attempts": context.attempt}


def _post(payload: WebhookPayload, context: JobContext) -> dict[str, Any]:
    headers = {
        "User-Agent": USER_AGENT,
        **payload.headers,
        "Content-Type": "application/json",
        "Idempotency-Key": context.job_id,
    }
    started = time.monotonic()
    try:
        with context.http_client() as client:
            response = client.post(
                str(payload.url),
                # The same bytes a completion callback's signature covers.
                content=body_bytes(payload.body),
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
