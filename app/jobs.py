"""The jobs API: submit, read, cancel, and the catalogue of job types."""

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import ValidationError
from redis.exceptions import RedisError
from werkzeug.routing import BaseConverter

from app.auth import token_name
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.metrics import job_submitted, publish_failed
from app.models import (
    MAX_DELAY_S,
    Job,
    JobSubmission,
    validate_json_payload,
    validation_details,
)
from app.submit import BrokerUnavailable, Submission, delay_until, submit_job, unavailable
from tasks.factory import TaskplaneCelery
from tasks.jobstore import FINAL_STATES
from tasks.netpolicy import UrlNotAllowed, policy_for
from tasks.registry import JobType

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


def celery_app() -> TaskplaneCelery:
    return current_app.extensions["celery"]


def resolve_submission(body: dict[str, Any]) -> Submission:
    """Validate the envelope, find the job type, validate its payload and schedule."""
    try:
        envelope = validate_json_payload(JobSubmission, body)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "the request body is invalid", details=validation_details(exc)
        ) from exc
    job_type = celery_app().job_types.get(envelope.type)
    if job_type is None:
        raise ApiError(
            422,
            "unknown_job_type",
            f"no job type named {envelope.type!r}",
            details={"known": sorted(celery_app().job_types)},
        )
    try:
        payload = validate_json_payload(job_type.payload_model, envelope.payload)
    except ValidationError as exc:
        raise ApiError(
            422,
            "validation_failed",
            f"the payload does not fit {job_type.name}",
            details=validation_details(exc, prefix="payload"),
        ) from exc
    check_urls(job_type, payload)
    run_at = delay_until(envelope.delay_s, envelope.run_at)
    if run_at is not None and (run_at - datetime.now(UTC)).total_seconds() > MAX_DELAY_S:
        raise ApiError(
            422,
            "validation_failed",
            "a job can be scheduled at most 30 days ahead",
            details=[{"path": "run_at", "message": "too far ahead", "type": "range"}],
        )
    return Submission(
        job_type, payload.model_dump(mode="json", by_alias=True, exclude_unset=True), run_at
    )


def check_urls(job_type: JobType, payload: Any) -> None:
    """422 for a URL this environment's policy refuses (anti-SSRF)."""
    if not job_type.url_fields:
        return
    policy = policy_for(celery_app().conf)
    for name in job_type.url_fields:
        value = getattr(payload, name, None)
        if value is None:
            continue
        try:
            policy.check_url(str(value))
        except UrlNotAllowed as exc:
            raise ApiError(
                422,
                "url_not_allowed",
                f"payload.{name} is not allowed: {exc}",
                details=[
                    {"path": f"payload.{name}", "message": str(exc), "type": "url_not_allowed"}
                ],
            ) from exc


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


IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@bp.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    body = read_json_object(request)
    submission = resolve_submission(body)
    key = request.headers.get("Idempotency-Key")
    try:
        if key is None:
            record, created = submit_job(celery_app(), submission), True
        else:
            record, created = submit_idempotently(key, body, submission)
    except BrokerUnavailable:
        publish_failed(submission.job_type.name)
        raise
    if not created:
        return jsonify(job_view(record)), 200, {"Location": _location(record)}
    job_submitted(submission.job_type.name)
    return jsonify(job_view(record)), 202, {"Location": _location(record)}


def submit_idempotently(
    key: str, body: dict[str, Any], submission: Submission
) -> tuple[dict[str, Any], bool]:
    """The first job submitted with ``key`` (created=False), or a new one (created=True).

    The same key with a different body is a client bug: 409, never a silent
    second job or a silent reuse.
    """
    if not IDEMPOTENCY_KEY.match(key):
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters"
        )
    store = celery_app().jobstore
    fingerprint = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    job_id = str(uuid.uuid4())
    ttl = int(celery_app().conf.taskplane_idempotency_ttl_s)
    try:
        # Keys are per token: two clients never see each other's jobs this way.
        key = f"{token_name()}:{key}"
        held = store.claim_idempotency_key(key, fingerprint, job_id, ttl)
        existing = store.get(held[1]) if held else None
    except RedisError as exc:
        raise unavailable("job storage") from exc
    if held is None:
        try:
            return submit_job(celery_app(), submission, job_id), True
        except ApiError:
            try:
                store.release_idempotency_key(key, job_id)
            except RedisError:
                pass  # the key expires on its own; the client got its 503
            raise
    if held[0] != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
            details={"job_id": held[1]},
        )
    if existing is None:
        raise ApiError(
            409,
            "idempotency_key_in_progress",
            "a request with this Idempotency-Key is still being accepted",
            headers={"Retry-After": "1"},
        )
    return existing, False


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
