"""The HTTP face of the submission core (tasks/core/submission.py): its errors as answers.

``POST /jobs`` and ``POST /jobs/batch`` parse, authorize and call the core;
this module maps what the core raises to the one JSON error shape and counts
what was accepted and refused.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from app.errors import ApiError
from app.metrics import job_submitted, publish_failed
from tasks.core.submission import (
    Idempotency,
    IdempotencyConflict,
    InvalidBatch,
    InvalidJob,
    NewJob,
    Submitted,
    Unavailable,
    submit,
)

RETRY_AFTER_S = "5"
T = TypeVar("T")


def unavailable(what: str) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"{what} is unavailable; try again later",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def refuse_while_blocked(celery: Any) -> None:
    """503 at once while RabbitMQ blocks publishers (a memory or disk alarm).

    For operations that publish through Celery's own connections (remote
    control, dead-letter replay), whose confirm waits have no bound: during
    an alarm they would wait as long as the alarm lasts.
    """
    celery.broker_watch.ensure_started()
    if celery.broker_alarm.reason is not None:
        reason = celery.broker_alarm.reason
        raise unavailable(f"the message broker (it blocks publishers: {reason})")


def checked(validate: Callable[[], T]) -> T:
    """Run a core validation; its errors become 422 answers."""
    try:
        return validate()
    except InvalidJob as exc:
        if exc.code == "unknown_job_type":
            raise ApiError(422, exc.code, exc.message, details=exc.extra) from exc
        raise ApiError(422, exc.code, exc.message, details=exc.problems) from exc
    except InvalidBatch as exc:
        raise ApiError(422, "validation_failed", exc.message, details=exc.problems) from exc


def accept(
    celery: Any, jobs: Sequence[NewJob], idempotency: Idempotency | None = None
) -> list[Submitted]:
    """Submit through the core; 503 when storage or the broker did not take the jobs."""
    try:
        submitted = submit(celery, jobs, idempotency=idempotency)
    except Unavailable as exc:
        if exc.what == "the message broker":
            for name, count in _per_type(jobs).items():
                publish_failed(name, count)
        raise unavailable(exc.what) from exc
    except IdempotencyConflict as exc:
        if exc.in_progress:
            raise ApiError(
                409,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being accepted",
                headers={"Retry-After": "1"},
            ) from exc
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
            details={"job_id": exc.job_id},
        ) from exc
    created = [job for job, done in zip(jobs, submitted, strict=True) if done.created]
    for name, count in _per_type(created).items():
        job_submitted(name, count)
    return submitted


def idempotency_from(key: str | None, body: Any, namespace: str, ttl_s: int) -> Idempotency | None:
    """The request's Idempotency-Key, per token, with a digest of its body; 400 if malformed."""
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_CHARS.issuperset(key) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters",
        )
    fingerprint = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    # Keys are per token: two clients never see each other's jobs this way.
    return Idempotency(f"{namespace}:{key}", fingerprint, ttl_s)


IDEMPOTENCY_KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))
IDEMPOTENCY_KEY_MAX_LENGTH = 255


def _per_type(jobs: Sequence[NewJob]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.job_type.name] = counts.get(job.job_type.name, 0) + 1
    return counts
