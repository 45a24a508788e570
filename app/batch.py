"""POST /jobs/batch: many jobs in one request (at most MAX_BATCH), all or nothing.

Every item is validated by the submission core before anything is recorded;
a bad item rejects the whole batch, naming each failing index. Items may be
delayed (``delay_s`` or ``run_at``, each its own), and an Idempotency-Key
covers the whole batch. The answer is 202 only once RabbitMQ confirmed every
message, 200 when the key repeats a batch already accepted (its jobs, nothing
new), otherwise 503 and no job exists.
"""

from flask import Blueprint, Response, jsonify, request, url_for

from app.auth import token_name
from app.context import celery_app
from app.errors import ApiError
from app.jobs import BAD_SUBMISSION, IDEMPOTENCY, KEY_CONFLICT
from app.jsonbody import read_json_object
from app.models import BatchAccepted
from app.operations import UNAVAILABLE, Body, Reply, operation
from app.schemas import batch
from app.submit import accept, checked, idempotency_from
from tasks.core.submission import MAX_BATCH, check_batch

bp = Blueprint("batch", __name__)
ID_SLOT = "00000000-0000-0000-0000-000000000000"


@bp.post("/jobs/batch")
@operation(
    "submitBatch",
    f"Submit 1 to {MAX_BATCH:,} jobs; 202 once every message is confirmed",
    {
        202: Reply("every job accepted and confirmed by the broker", BatchAccepted),
        200: Reply(
            "the batch first accepted with this Idempotency-Key; nothing new was created",
            BatchAccepted,
        ),
        409: KEY_CONFLICT,
        **BAD_SUBMISSION,
        503: UNAVAILABLE,
    },
    params=(IDEMPOTENCY,),
    body=Body(batch),
    description="A bad item rejects the whole batch (422); details carry each item's index.",
)
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
