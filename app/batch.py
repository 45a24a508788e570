"""POST /jobs/batch: up to 1,000 jobs in one request, all or nothing.

Every item is validated before anything is recorded; a bad item rejects the
whole batch, naming each failing index. The records are written in one Redis
round trip, the messages published with pipelined confirms, and the answer is
202 only once RabbitMQ confirmed every message; otherwise 503 and no job exists.
"""

from flask import Blueprint, Response, jsonify, request, url_for

from app.auth import token_name
from app.context import celery_app
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.submit import accept, checked, idempotency_from
from tasks.core.submission import check_batch

bp = Blueprint("batch", __name__)
ID_SLOT = "00000000-0000-0000-0000-000000000000"


@bp.post("/jobs/batch")
def create_batch() -> tuple[Response, int]:
    body = read_json_object(request)
    if set(body) - {"jobs"}:
        raise ApiError(422, "validation_failed", "the body takes only 'jobs'")
    celery = celery_app()
    jobs = checked(lambda: check_batch(celery, body.get("jobs")))
    idempotency = idempotency_from(
        request.headers.get("Idempotency-Key"),
        body,
        token_name(),
        int(celery.conf.taskplane_idempotency_ttl_s),
    )
    submitted = accept(celery, jobs, idempotency)
    location = url_for("jobs.get_job", job_id=ID_SLOT)  # built once, not once per job
    created = all(s.created for s in submitted)
    return jsonify(
        {
            "jobs": [
                {**s.record, "location": location.replace(ID_SLOT, s.record["id"])}
                for s in submitted
            ]
        }
    ), 202 if created else 200
