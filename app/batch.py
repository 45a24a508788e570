"""POST /jobs/batch: up to 1,000 jobs in one request, all or nothing.

Every item is validated before anything is recorded; a bad item rejects the
whole batch, naming each failing index. The records are written in one Redis
round trip, the messages published with pipelined confirms, and the answer is
202 only once RabbitMQ confirmed every message; otherwise 503 and no job exists.
"""

import logging
import uuid
from collections import Counter
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import ValidationError
from redis.exceptions import RedisError

from app.errors import ApiError
from app.jobs import check_urls
from app.jsonbody import read_json_object
from app.metrics import job_submitted, publish_failed
from app.models import JobSubmission, validate_json_payload, validation_details
from app.submit import PUBLISH_ERRORS, BrokerUnavailable, confirm_timeout_s, unavailable
from tasks.base import RECORDED_HEADER
from tasks.jobstore import utcnow

bp = Blueprint("batch", __name__)
logger = logging.getLogger("taskplane.web")
MAX_BATCH = 1000
ID_SLOT = "00000000-0000-0000-0000-000000000000"


def _validate(items: Any) -> list[tuple[Any, dict]]:
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ApiError(
            422,
            "validation_failed",
            f"'jobs' must be a list of 1 to {MAX_BATCH} jobs",
            details=[{"path": "jobs", "message": "wrong size or type", "type": "size"}],
        )
    job_types = current_app.extensions["celery"].job_types
    valid, errors = [], []
    for index, item in enumerate(items):
        prefix = ""
        try:
            envelope = validate_json_payload(JobSubmission, item)
            prefix = "payload"
            if envelope.delay_s is not None or envelope.run_at is not None:
                raise ApiError(422, "validation_failed", "batch jobs cannot be scheduled")
            job_type = job_types.get(envelope.type)
            if job_type is None:
                errors.append(
                    {
                        "index": index,
                        "path": "type",
                        "type": "unknown_job_type",
                        "message": f"no job type named {envelope.type!r}",
                    }
                )
                continue
            payload = validate_json_payload(job_type.payload_model, envelope.payload)
            check_urls(job_type, payload)
        except ValidationError as exc:
            errors += [{"index": index, **d} for d in validation_details(exc, prefix)]
            continue
        except ApiError as exc:
            details = (
                exc.details
                if isinstance(exc.details, list)
                else [{"path": "", "type": exc.code, "message": exc.message}]
            )
            errors += [{"index": index, **d} for d in details]
            continue
        valid.append((job_type, payload.model_dump(mode="json", by_alias=True, exclude_unset=True)))
    if errors:
        raise ApiError(
            422,
            "validation_failed",
            f"{len({e['index'] for e in errors})} of {len(items)} jobs are invalid; "
            "nothing was submitted",
            details=errors,
        )
    return valid


@bp.post("/jobs/batch")
def create_batch() -> tuple[Response, int]:
    body = read_json_object(request)
    if set(body) - {"jobs"}:
        raise ApiError(422, "validation_failed", "the body takes only 'jobs'")
    jobs = _validate(body.get("jobs"))
    celery = current_app.extensions["celery"]
    store = celery.jobstore
    ids = [str(uuid.uuid4()) for _ in jobs]
    now = utcnow()
    records = [
        {
            "id": job_id,
            "type": jt.name,
            "queue": jt.queue,
            "state": "queued",
            "attempts": 0,
            "created_at": now,
        }
        for job_id, (jt, _) in zip(ids, jobs, strict=True)
    ]
    try:
        store.create_many(records)
    except RedisError as exc:
        # A Redis that timed out may still run the writes later: remove them then.
        celery.forgetter.forget(ids, now=False)
        raise unavailable("job storage") from exc
    messages = [
        (jt.queue, celery.publisher.build(job_id, jt.name, payload, {RECORDED_HEADER: True}))
        for job_id, (jt, payload) in zip(ids, jobs, strict=True)
    ]
    per_type = Counter(jt.name for jt, _ in jobs)
    try:
        celery.publisher.publish(messages, confirm_timeout_s(celery, len(messages)))
    except PUBLISH_ERRORS as exc:
        logger.warning("batch of %d not confirmed: %r", len(ids), exc)
        celery.forgetter.forget(ids)
        for name, count in per_type.items():
            publish_failed(name, count)
        raise BrokerUnavailable() from exc
    for name, count in per_type.items():
        job_submitted(name, count)
    location = url_for("jobs.get_job", job_id=ID_SLOT)  # built once, not once per job
    return jsonify(
        {"jobs": [{**r, "location": location.replace(ID_SLOT, r["id"])} for r in records]}
    ), 202
