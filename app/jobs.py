"""The jobs API: submit, read, cancel, and the catalogue of job types."""

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from redis.exceptions import RedisError
from werkzeug.routing import BaseConverter

from app.auth import token_name
from app.context import celery_app
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.models import Job
from app.submit import accept, checked, idempotency_from, unavailable
from tasks.core.jobstore import FINAL_STATES
from tasks.core.submission import check

bp = Blueprint("jobs", __name__)


class JobIdConverter(BaseConverter):
    """Any path segment but "batch", so /jobs/batch is not also a job id.

    Ids that are not UUIDs still reach the view, which answers 404
    job_not_found rather than the router's generic 404.
    """

    regex = r"(?!batch$)[^/]+"


@bp.record_once
def _register_converter(state: Any) -> None:
    state.app.url_map.converters["jobid"] = JobIdConverter


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


@bp.get("/jobs/<jobid:job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(job_view(load_job(job_id)))


@bp.delete("/jobs/<jobid:job_id>")
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
