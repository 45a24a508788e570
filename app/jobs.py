"""The jobs API: submit, read, cancel, and the catalogue of job types.

Cancelling is ``POST /jobs/<id>/cancel``: the job stays readable afterwards
(state ``cancelled``), which HTTP clients and fuzzers do not expect after a
``DELETE``. ``DELETE /jobs/<id>`` does the same and stays, documented as
deprecated, for existing clients.
"""

import math
import re
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from redis.exceptions import RedisError
from werkzeug.routing import BaseConverter

from app.auth import token_name
from app.context import celery_app
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.models import Job, JobTypeList
from app.operations import BAD_BODY, UNAVAILABLE, Body, Param, Reply, operation
from app.schemas import IDEMPOTENCY_KEY, submission
from app.submit import accept, checked, idempotency_from, unavailable
from app.waits import NO_SLOT, STOPPED, STORAGE_LOST, job_waits
from tasks.core.bulk_actions import after_cancel
from tasks.core.jobstore import FINAL_STATES
from tasks.core.submission import check

bp = Blueprint("jobs", __name__)


class JobIdConverter(BaseConverter):
    """Any path segment but the names of /jobs/batch, /jobs/stats and the bulk actions.

    Ids that are not UUIDs still reach the view, which answers 404
    job_not_found rather than the router's generic 404.
    """

    regex = r"(?!(?:batch|stats|cancel|replay|purge)$)[^/]+"


@bp.record_once
def _register_converter(state: Any) -> None:
    state.app.url_map.converters["jobid"] = JobIdConverter


def job_view(record: dict[str, Any]) -> dict[str, Any]:
    return Job.model_validate(record).model_dump(mode="json")


def load_job(job_id: str) -> dict[str, Any]:
    if not is_uuid(job_id):
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    try:
        record = celery_app().jobstore.get(job_id)
    except RedisError as exc:
        raise unavailable("job storage") from exc
    if record is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return record


JOB_ID = Param(
    "job_id",
    "path",
    {"type": "string", "format": "uuid"},
    "the job's id (other values answer 404 job_not_found)",
)
IDEMPOTENCY = Param(
    "Idempotency-Key",
    "header",
    IDEMPOTENCY_KEY,
    "repeat a request safely: the same key and body answer the first request's jobs "
    "(200), a different body 409; kept per token for taskplane_idempotency_ttl_s",
)
# An Idempotency-Key in use by another body, or whose first request is still running.
KEY_CONFLICT = Reply(
    "the Idempotency-Key was used with a different body (idempotency_key_reused), or its "
    "first request is still being accepted (idempotency_key_in_progress, with Retry-After)",
    headers={"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
)
BAD_SUBMISSION = {
    **BAD_BODY,
    400: Reply("the body is not valid JSON, or the Idempotency-Key is malformed"),
}
UNKNOWN_JOB = Reply("no job with this id")


@bp.post("/jobs")
@operation(
    "submitJob",
    "Submit a job; 202 once the broker confirmed it",
    {
        202: Reply(
            "accepted and confirmed by the broker",
            Job,
            headers={"Location": {"schema": {"type": "string"}, "required": True}},
        ),
        200: Reply(
            "the job first accepted with this Idempotency-Key; nothing new was created",
            Job,
            headers={"Location": {"schema": {"type": "string"}, "required": True}},
        ),
        409: KEY_CONFLICT,
        **BAD_SUBMISSION,
        503: UNAVAILABLE,
    },
    params=(IDEMPOTENCY,),
    body=Body(submission),
)
def create_job() -> tuple[Response, int, dict[str, str]]:
    body = read_json_object(request)
    celery = celery_app()
    job = checked(lambda: check(celery, body))
    idempotency = idempotency_from(
        request.headers.get("Idempotency-Key"),
        body,
        token_name(),
        int(celery.conf.taskplane_idempotency_ttl_s),
    )
    (submitted,) = accept(celery, [job], idempotency)
    status = 202 if submitted.created else 200
    return jsonify(job_view(submitted.record)), status, {"Location": _location(submitted.record)}


def _location(record: dict[str, Any]) -> str:
    return url_for("jobs.get_job", job_id=record["id"])


WAIT_S_MAX = 30
# A decimal number (float() alone would take "1_0", " 1" and "infinity").
NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
WAIT_HEADER = "Taskplane-Wait"
WAIT_S = Param(
    "wait_s",
    "query",
    {"type": "number", "exclusiveMinimum": 0, "maximum": WAIT_S_MAX},
    "wait up to this many seconds for the job to reach a final state (succeeded, failed, "
    "cancelled), then answer; the job as it is once the wait ends",
)


@bp.get("/jobs/<jobid:job_id>")
@operation(
    "getJob",
    "A job's state, result and history",
    {
        200: Reply(
            "the job (with wait_s: once it is final, or as it is when the wait ended)",
            Job,
            headers={
                WAIT_HEADER: {
                    "description": "with wait_s only: final (the job is final), timeout "
                    "(the wait ended first) or unavailable (not waited: no wait slot was "
                    "free, or the server is stopping; ask again)",
                    "schema": {"type": "string", "enum": ["final", "timeout", "unavailable"]},
                }
            },
        ),
        400: Reply("wait_s is not a number in (0, 30] (invalid_parameter)"),
        404: UNKNOWN_JOB,
        503: UNAVAILABLE,
    },
    params=(JOB_ID, WAIT_S),
    description=(
        "With wait_s, the answer comes as soon as the job is final (within about 50 ms), "
        "or when wait_s seconds have passed (TASKPLANE_WAIT_MAX_S may end waits sooner), "
        "with the job as it is then; Taskplane-Wait says which. Each web process lets "
        "TASKPLANE_WAIT_SLOTS requests wait at once; past that a wait answers at once "
        "(Taskplane-Wait: unavailable) rather than queue. A 503 during a wait means job "
        "storage stopped answering."
    ),
)
def get_job(job_id: str) -> Response | tuple[Response, int, dict[str, str]]:
    wait_s = _wait_arg()
    record = load_job(job_id)
    if wait_s is None:
        return jsonify(job_view(record))
    if record["state"] not in FINAL_STATES:
        conf = celery_app().conf
        waits = job_waits(current_app)
        outcome = waits.wait(job_id, min(wait_s, float(conf.taskplane_wait_max_s)))
        if outcome == STORAGE_LOST:
            raise unavailable("job storage")
        if outcome == NO_SLOT:
            return jsonify(job_view(record)), 200, {WAIT_HEADER: "unavailable"}
        record = load_job(job_id)
        if outcome == STOPPED and record["state"] not in FINAL_STATES:
            return jsonify(job_view(record)), 200, {WAIT_HEADER: "unavailable"}
    done = "final" if record["state"] in FINAL_STATES else "timeout"
    return jsonify(job_view(record)), 200, {WAIT_HEADER: done}


def _wait_arg() -> float | None:
    """wait_s as a number in (0, WAIT_S_MAX], or None when absent; else 400."""
    raw = request.args.get("wait_s")
    if raw is None:
        return None
    value = float(raw) if NUMBER.fullmatch(raw) else math.nan
    if not 0 < value <= WAIT_S_MAX:  # NaN and 1e999 (inf) fail too
        raise ApiError(400, "invalid_parameter", f"wait_s must be a number in (0, {WAIT_S_MAX}]")
    return value


CANCEL_REPLIES = {
    200: Reply("cancelled; the job stays readable in state cancelled", Job),
    404: UNKNOWN_JOB,
    409: Reply("the job is running or finished (job_not_cancellable; details.state says which)"),
    503: UNAVAILABLE,
}


@bp.post("/jobs/<jobid:job_id>/cancel")
@operation(
    "cancelJob",
    "Cancel a job that has not started",
    CANCEL_REPLIES,
    params=(JOB_ID,),
    description=(
        "A waiting job (queued, scheduled or retrying) is not run. Its record stays readable, "
        "in state cancelled, as long as finished jobs are kept."
    ),
)
def cancel_job(job_id: str) -> Response:
    load_job(job_id)
    celery = celery_app()
    try:
        outcome = celery.jobstore.cancel(job_id)
        record = celery.jobstore.get(job_id)
    except RedisError as exc:
        raise unavailable("job storage") from exc
    if outcome == "cancelled" and record is not None and record.get("callback_url"):
        after_cancel(celery, [job_id])
    if outcome == "missing" or record is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    if outcome != "cancelled":
        final = outcome in FINAL_STATES
        raise ApiError(
            409,
            "job_not_cancellable",
            f"the job is {outcome}; only waiting jobs can be cancelled"
            + ("" if final else " (it is running now)"),
            details={"state": outcome},
        )
    return jsonify(job_view(record))


@bp.delete("/jobs/<jobid:job_id>")
@operation(
    "cancelJobByDelete",
    "Cancel a job that has not started (alias of POST /jobs/{job_id}/cancel)",
    CANCEL_REPLIES,
    params=(JOB_ID,),
    deprecated=True,
    description=(
        "Kept for existing clients; use POST /jobs/{job_id}/cancel. It cancels, it does "
        "not delete: the job stays readable, as the cancel verb says."
    ),
)
def cancel_job_by_delete(job_id: str) -> Response:
    return cancel_job(job_id)


@bp.get("/job-types")
@operation(
    "listJobTypes", "Job types with their payload schemas", {200: Reply("job types", JobTypeList)}
)
def list_job_types() -> Response:
    return jsonify({"job_types": [jt.describe() for jt in celery_app().job_types.values()]})


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
