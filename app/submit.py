"""Turning a validated submission into a recorded, broker-confirmed job.

The record is written before the publish, so a worker never sees a job the
API cannot describe; if the broker does not confirm, the record is removed
and the client gets 503: the job does not exist.
"""

import logging
import uuid
from typing import Any

from amqp.exceptions import AMQPError, MessageNacked
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from app.errors import ApiError
from tasks.factory import TaskplaneCelery
from tasks.registry import JobType

logger = logging.getLogger("taskplane.web")
RETRY_AFTER_S = "5"


def unavailable(what: str) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"{what} is unavailable; try again later",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def submit_job(celery: TaskplaneCelery, job_type: JobType, payload: dict[str, Any]) -> dict:
    job_id = str(uuid.uuid4())
    try:
        record = celery.jobstore.create(job_id, job_type.name, job_type.queue)
    except RedisError as exc:
        logger.warning("could not record job: %s", exc)
        raise unavailable("job storage") from exc
    try:
        celery.send_task(
            job_type.name, args=(payload,), task_id=job_id, queue=job_type.queue, ignore_result=True
        )
    except (OperationalError, AMQPError, MessageNacked, OSError) as exc:
        logger.warning("broker did not confirm job %s: %s", job_id, exc)
        _forget(celery, job_id)
        raise unavailable("the message broker") from exc
    return record


def _forget(celery: TaskplaneCelery, job_id: str) -> None:
    try:
        celery.jobstore.delete(job_id)
    except RedisError:
        logger.exception("could not remove the record of unpublished job %s", job_id)
