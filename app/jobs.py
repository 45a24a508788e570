"""The jobs API: submit, read, cancel, and the catalogue of job types."""

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import ValidationError
from redis.exceptions import RedisError

from app.errors import ApiError
from app.jsonbody import read_json_object
from app.models import Job, JobSubmission, validation_details
from app.submit import submit_job, unavailable
from tasks.factory import TaskplaneCelery
from tasks.jobstore import FINAL_STATES
from tasks.registry import JobType

bp = Blueprint("jobs", __name__)


def celery_app() -> TaskplaneCelery:
    return current_app.extensions["celery"]


def resolve_submission(body: dict[str, Any]) -> tuple[JobType, dict[str, Any]]:
    """Validate the envelope, find the job type, validate its payload."""
    try:
        submission = JobSubmission.model_validate(body)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "the request body is invalid", details=validation_details(exc)
        ) from exc
    job_type = celery_app().job_types.get(submission.type)
    if job_type is None:
        raise ApiError(
            422,
            "unknown_job_type",
            f"no job type named {submission.type!r}",
            details={"known": sorted(celery_app().job_types)},
        )
    try:
        payload = job_type.payload_model.model_validate(submission.payload)
    except ValidationError as exc:
        raise ApiError(
            422,
            "validation_failed",
            f"the payload does not fit {job_type.name}",
            details=validation_details(exc, prefix="payload"),
        ) from exc
    return job_type, payload.model_dump(mode="json", by_alias=True, exclude_unset=True)


def job_view(record: dict[str, Any]) -> dict[str, Any]:
    return Job.model_validate(record).model_dump(mode="json")


def load_job(job_id: str) -> dict[str, Any]:
    if not _is_uuid(job_id):
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    try:
        record = celery_app().jobstore.get(job_id)
    except RedisError as exc:
        raise unavailable("job storage") from exc
    if record is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return record


@bp.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    job_type, payload = resolve_submission(read_json_object(request))
    record = submit_job(celery_app(), job_type, payload)
    location = url_for("jobs.get_job", job_id=record["id"])
    return jsonify(job_view(record)), 202, {"Location": location}


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(job_view(load_job(job_id)))


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str) -> Response:
    load_job(job_id)
    try:
        outcome = celery_app().jobstore.cancel(job_id)
        record = celery_app().jobstore.get(job_id)
    except RedisError as exc:
        raise unavailable("job storage") from exc
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


@bp.get("/job-types")
def list_job_types() -> Response:
    return jsonify({"job_types": [jt.describe() for jt in celery_app().job_types.values()]})


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
