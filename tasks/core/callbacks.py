"""Completion callbacks: a finished job's view POSTed to its ``callback_url``, signed.

A job that names ``callback_url`` gets, once it reaches a final state
(succeeded, failed for good, dead-lettered, cancelled), a ``webhook.deliver``
job that POSTs its view (``submission.public(record)``, what ``GET /jobs/<id>``
shows) there: retried and dead-lettered like any webhook, submitted through
the submission core like any job.

- **Once per completion.** The callback job's id is derived from the job's
  id, its run (``len(history)``: a replayed job runs again) and its final
  state, so every place that sees the completion (the worker that finished
  it, its redelivered message, the dead-letter watcher, the web's cancel) may
  call ``notify_final``: the core creates one job per id and returns the
  existing one after that. A replayed job that finishes again is a new
  completion and gets a new callback.
- **Signed here over the bytes sent.** The body is the job's view as the
  webhook payload validates it, serialized by ``json_body.body_bytes``, the
  function webhook.deliver sends it with, and signed (Stripe's scheme):
  ``X-Taskplane-Signature: t=<unix seconds>, v1=<hex HMAC-SHA256(secret,
  "<t>." + body)>``. The
  secret never enters a payload: anyone may submit a webhook.deliver job
  with any headers, but only this module computes a valid signature, and only
  over a job's view. Retries carry the same signature and timestamp;
  receivers drop duplicates by ``Idempotency-Key`` (the callback job's id).
- **No loops.** A callback job has no ``callback_url`` itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

from tasks.core.jobstore import FINAL_STATES
from tasks.core.json_body import body_bytes
from tasks.core.submission import InvalidJob, NewJob, check_payload, public, submit

logger = logging.getLogger("taskplane.callbacks")

CALLBACK_TYPE = "webhook.deliver"
EVENT = "job.finished"
SIGNATURE_HEADER = "X-Taskplane-Signature"
EVENT_HEADER = "X-Taskplane-Event"
JOB_HEADER = "X-Taskplane-Job"
# Tag on a callback job naming the job it reports (GET /jobs?tag=taskplane.callback_for:<id>).
CALLBACK_TAG = "taskplane.callback_for"
# Development and testing sign with this when TASKPLANE_CALLBACK_SECRET is unset.
# It is public: production never uses it.
DEVELOPMENT_SECRET = "taskplane-development-callback-secret"  # noqa: S105 - public
# Callback job ids: uuid5 in this namespace of "<job id>/<run>/<state>".
NAMESPACE = uuid.UUID("5b0c7a52-3a0e-4f0c-9a55-6c1f2e8f4d17")


def secret(conf: Any) -> str | None:
    """The signing secret; None in production when none is configured."""
    configured = str(conf.get("taskplane_callback_secret") or "")
    if configured:
        return configured
    if conf.get("taskplane_environment") == "production":
        return None
    return DEVELOPMENT_SECRET


def check_configured(app: Any) -> None:
    """Refuse a job with a callback_url when callbacks cannot be signed (production, no secret)."""
    if secret(app.conf) is None:
        message = "completion callbacks are not configured here (TASKPLANE_CALLBACK_SECRET)"
        raise InvalidJob(
            "callbacks_not_configured",
            message,
            [{"path": "callback_url", "type": "callbacks_not_configured", "message": message}],
        )


def callback_id(job_id: str, run: int, state: str) -> str:
    """The one callback job of this completion (a run of the job ending in ``state``)."""
    return str(uuid.uuid5(NAMESPACE, f"{job_id}/{run}/{state}"))


def sign(key: str, body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256(key, "<timestamp>." + body)>``."""
    digest = hmac.new(key.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def build(app: Any, record: dict[str, Any], *, now: float | None = None) -> NewJob | None:
    """The callback job for a finished ``record``; None when it needs none.

    Raises ``InvalidJob`` when the callback cannot be sent at all (the URL
    policy refuses it now, no secret in production, no webhook.deliver here).
    """
    url = record.get("callback_url")
    state = record.get("state")
    if not url or state not in FINAL_STATES:
        return None
    job_type = app.job_types.get(CALLBACK_TYPE)
    if job_type is None:
        raise InvalidJob("unknown_job_type", f"no {CALLBACK_TYPE} job type to send callbacks", [])
    key = secret(app.conf)
    if key is None:
        check_configured(app)  # raises
    job_id = str(record["id"])
    timestamp = int(time.time() if now is None else now)
    unsigned = {
        "url": url,
        "body": public(record),
        "headers": {EVENT_HEADER: EVENT, JOB_HEADER: job_id},
    }
    # Validated first: the worker sends the body as validation leaves it (72.0 is 72).
    payload = check_payload(app, job_type, unsigned)
    body = body_bytes(payload["body"])
    payload["headers"][SIGNATURE_HEADER] = sign(str(key), body, timestamp)
    run = len(record.get("history") or [])
    return NewJob(
        job_type,
        payload,
        job_id=callback_id(job_id, run, str(state)),
        tags={CALLBACK_TAG: job_id},
        parent_id=job_id,
        # callback_url stays None: a callback never calls back (no loops).
    )


def notify_final(app: Any, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Submit the completion callback of a finished job; returns the callback job's record.

    Idempotent per completion (deterministic id). Returns None when the job
    needs no callback (no ``callback_url``, not final) or one cannot be sent
    (logged: retrying cannot help). Raises ``Unavailable`` when the broker or
    Redis did not take it: the caller must make sure it is tried again.
    """
    if not record or not record.get("callback_url"):
        return None
    try:
        job = build(app, record)
    except InvalidJob as exc:
        logger.error(
            "job %s: cannot send its completion callback (%s: %s)",
            record.get("id"),
            exc.code,
            exc.message,
        )
        return None
    if job is None:
        return None
    (submitted,) = submit(app, [job])
    if submitted.created:
        logger.info(
            "job %s is %s; callback job %s submitted",
            record.get("id"),
            record.get("state"),
            submitted.record["id"],
        )
    return submitted.record
