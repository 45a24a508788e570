"""Turning a validated submission into a recorded, broker-confirmed job.

The record is written before the publish, so a worker never sees a job the
API cannot describe. If the broker does not confirm within the bound, the
record is removed and the client gets 503: the job does not exist. (Should
the broker still take that message later, the worker finds no record for a
message marked as recorded and drops it.)
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from amqp.exceptions import AMQPError, MessageNacked
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from app.errors import ApiError
from tasks.base import RECORDED_HEADER
from tasks.factory import TaskplaneCelery
from tasks.jobstore import rfc3339
from tasks.registry import JobType

logger = logging.getLogger("taskplane.web")
RETRY_AFTER_S = "5"
# OSError includes timeouts, and so tasks.publisher.ConfirmTimeout.
PUBLISH_ERRORS = (OperationalError, AMQPError, MessageNacked, OSError)


@dataclass(frozen=True)
class Submission:
    job_type: JobType
    payload: dict[str, Any]
    run_at: datetime | None = None  # None: now


def unavailable(what: str) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"{what} is unavailable; try again later",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def refuse_while_blocked(celery: TaskplaneCelery) -> None:
    """503 at once while RabbitMQ blocks publishers (a memory or disk alarm).

    For operations that publish through Celery's own connections (remote
    control, dead-letter replay), whose confirm waits have no bound: during
    an alarm they would wait as long as the alarm lasts.
    """
    celery.broker_watch.ensure_started()
    if celery.broker_alarm.reason is not None:
        raise unavailable(
            f"the message broker (it blocks publishers: {celery.broker_alarm.reason})"
        )


class BrokerUnavailable(ApiError):
    """The broker did not confirm a publish: counted as a publish failure."""

    def __init__(self) -> None:
        error = unavailable("the message broker")
        super().__init__(error.status, error.code, error.message, headers=error.headers)


def submit_job(celery: TaskplaneCelery, submission: Submission, job_id: str | None = None) -> dict:
    job_id = job_id or str(uuid.uuid4())
    job_type = submission.job_type
    countdown = _countdown(submission.run_at)
    extra = {"scheduled_for": rfc3339(submission.run_at)} if countdown else {}
    try:
        record = celery.jobstore.create(
            job_id,
            job_type.name,
            job_type.queue,
            state="scheduled" if countdown else "queued",
            **extra,
        )
    except RedisError as exc:
        logger.warning("could not record job: %s", exc)
        # A Redis that timed out may still run the write later: remove it then.
        celery.forgetter.forget([job_id], now=False)
        raise unavailable("job storage") from exc
    try:
        message = celery.publisher.build(
            job_id, job_type.name, submission.payload, {RECORDED_HEADER: True}, countdown=countdown
        )
        celery.publisher.publish(
            [(job_type.queue, message)], confirm_timeout_s(celery), countdown=countdown
        )
    except PUBLISH_ERRORS as exc:
        logger.warning("broker did not confirm job %s: %s", job_id, exc)
        forget(celery, job_id)
        raise BrokerUnavailable() from exc
    return record


def confirm_timeout_s(celery: TaskplaneCelery, jobs: int = 1) -> float:
    """How long the broker may take to confirm ``jobs`` messages before we answer 503."""
    return float(celery.conf.taskplane_confirm_timeout_s) + (jobs - 1) / 50


def _countdown(run_at: datetime | None) -> int | None:
    """Whole seconds until ``run_at``, rounded (native delayed delivery counts seconds).

    Rounded rather than cut: ``delay_s: 1`` leaves a hair under a second by the
    time it is published, and must still wait a second.
    """
    if run_at is None:
        return None
    seconds = round((run_at - datetime.now(UTC)).total_seconds())
    return seconds if seconds >= 1 else None


def forget(celery: TaskplaneCelery, job_id: str) -> None:
    celery.forgetter.forget([job_id])


def delay_until(delay_s: float | None, run_at: datetime | None) -> datetime | None:
    if delay_s:
        return datetime.now(UTC) + timedelta(seconds=delay_s)
    return run_at
