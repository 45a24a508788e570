"""Finding jobs and acting on many: search, counts, bulk cancel/replay/purge, replay one.

HTTP only: parsing, scopes (app/auth.py) and error mapping. The work is in
tasks/core/job_search.py and tasks/core/bulk_actions.py, which ``flask jobs``
calls too.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from app.context import celery_app
from app.errors import ApiError
from app.jobs import JOB_ID, is_uuid, job_view
from app.jsonbody import read_json_object
from app.models import BulkResult, Job, JobPage, JobStats
from app.operations import BAD_BODY, UNAVAILABLE, Body, Param, Reply, operation
from app.submit import checked, refuse_while_blocked, unavailable
from tasks.core import bulk_actions, job_search
from tasks.core.errors import Unavailable
from tasks.core.job_search import (
    CURSOR_PATTERN,
    MAX_LIMIT,
    STATES,
    TAG_FILTER,
    InvalidCursor,
    JobFilter,
)
from tasks.core.validation import validate_json_payload, validation_details

bp = Blueprint("job_search", __name__)
T = TypeVar("T")
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
FILTER_PARAMS = ("state", "type", "queue", "created_after", "created_before")


UuidText = Annotated[str, Field(pattern=UUID_PATTERN)]


class BulkRequest(BaseModel):
    """Which jobs: a list of ids, or a filter (the search's parameters as a JSON object).

    Neither may be null: the published schema (``bulk_body``) says "exactly one
    of the two", which JSON Schema can state only for keys that are present.
    """

    model_config = ConfigDict(extra="forbid")

    ids: list[UuidText] = Field(
        default=None,  # type: ignore[assignment]
        min_length=1,
        max_length=bulk_actions.MAX_BULK,
    )
    filter: JobFilter = Field(default=None)  # type: ignore[assignment]
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_selection(self) -> "BulkRequest":
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of 'ids' or 'filter'")
        return self


def bulk_body(action: str) -> Callable[[Any], dict[str, Any]]:
    """The body of POST /jobs/<action>: the filter's state limited to what the action takes."""

    def build(context: Any) -> dict[str, Any]:
        del context
        job_filter = JobFilter.model_json_schema(mode="validation")
        job_filter.pop("title", None)
        states = list(bulk_actions.ACTION_STATES[action])
        job_filter["properties"]["state"] = {
            "anyOf": [{"type": "string", "enum": states}, {"type": "null"}],
            "default": None,
            "description": f"one of the states {action} applies to; none: all of them",
        }
        job_filter["description"] = "the search's filters (GET /jobs); tag is a list"
        return {
            "type": "object",
            "title": f"Bulk {action}",
            "additionalProperties": False,
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": bulk_actions.MAX_BULK,
                    "items": {"type": "string", "pattern": UUID_PATTERN},
                    "description": f"job ids, at most {bulk_actions.MAX_BULK}",
                },
                "filter": job_filter,
                "dry_run": {
                    "type": "boolean",
                    "default": False,
                    "description": "only count what would be touched",
                },
            },
            "oneOf": [{"required": ["ids"]}, {"required": ["filter"]}],
        }

    return build


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: dict[str, JsonValue] | None = Field(
        default=None,
        description="a corrected payload, checked against the job type's schema; "
        "absent: the payload the job last ran with",
    )


def _query_filter() -> JobFilter:
    values: dict[str, Any] = {k: request.args[k] for k in FILTER_PARAMS if k in request.args}
    tags = request.args.getlist("tag")
    if tags:
        values["tag"] = tags
    try:
        return validate_json_payload(JobFilter, values)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ApiError(
            400, "invalid_parameter", "a filter parameter is invalid", validation_details(exc)
        ) from exc


def _limit() -> int:
    raw = request.args.get("limit", str(job_search.DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer in [1, {MAX_LIMIT}]")
    return int(raw)


@contextmanager
def _answers() -> Iterator[None]:
    try:
        yield
    except InvalidCursor as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not one this server gave out") from exc
    except bulk_actions.JobNotFound as exc:
        raise ApiError(404, "job_not_found", str(exc)) from exc
    except bulk_actions.NotReplayable as exc:
        raise ApiError(409, exc.code, exc.message, details={"state": exc.state}) from exc
    except Unavailable as exc:
        raise unavailable(exc.what) from exc


def _run(action: Callable[[], T]) -> T:
    with _answers():
        return checked(action)


FILTER_QUERY = (
    Param("state", "query", {"type": "string", "enum": list(STATES)}, "jobs in this state"),
    Param("type", "query", {"type": "string", "minLength": 1, "maxLength": 200}, "a job type"),
    Param("queue", "query", {"type": "string", "minLength": 1, "maxLength": 200}, "a queue"),
    Param(
        "tag",
        "query",
        {
            "type": "array",
            "items": {"type": "string", "pattern": TAG_FILTER},
            "maxItems": job_search.MAX_TAG_FILTERS,
        },
        f"key:value; repeat for more (at most {job_search.MAX_TAG_FILTERS}), all must match",
    ),
    Param(
        "created_after",
        "query",
        {"type": "string", "format": "date-time"},
        "RFC 3339 with offset; created at or after",
    ),
    Param(
        "created_before",
        "query",
        {"type": "string", "format": "date-time"},
        "RFC 3339 with offset; created before",
    ),
)


@bp.get("/jobs")
@operation(
    "listJobs",
    "Search jobs, newest first, a page at a time",
    {
        200: Reply("a page of jobs and the cursor of the next page", JobPage),
        400: Reply("a parameter is invalid (invalid_parameter) or the cursor is (invalid_cursor)"),
        503: UNAVAILABLE,
    },
    params=(
        *FILTER_QUERY,
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
            "jobs per page",
        ),
        Param(
            "cursor",
            "query",
            {"type": "string", "pattern": f"^{CURSOR_PATTERN.pattern}$"},
            "next_cursor of the previous page (opaque; another value is 400 invalid_cursor)",
        ),
    ),
    description=(
        "Answered from indexes kept in Redis by the same atomic steps that change jobs, so "
        "a page agrees with the records. Every filter given must hold. The cursor is stable: "
        "paging while jobs arrive returns no job twice and skips none that existed when "
        "paging began. A page may hold fewer than limit jobs and still have a next_cursor: "
        "one request looks at a bounded number of index entries (5,000)."
    ),
)
def list_jobs() -> Response:
    job_filter, limit = _query_filter(), _limit()
    with _answers():
        page = job_search.search(
            celery_app(), job_filter, limit=limit, cursor=request.args.get("cursor")
        )
    return jsonify({"jobs": [job_view(r) for r in page.jobs], "next_cursor": page.next_cursor})


@bp.get("/jobs/stats")
@operation(
    "jobStats",
    "How many jobs are in each state, per job type",
    {200: Reply("counts", JobStats), 503: UNAVAILABLE},
    description="Kept by the scripts that change jobs; reading it costs one Redis call.",
)
def job_stats() -> Response:
    with _answers():
        return jsonify(job_search.stats(celery_app()))


def _bulk(action: str) -> Response:
    body = read_json_object(request)
    try:
        wanted = validate_json_payload(BulkRequest, body)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "the request body is invalid", validation_details(exc)
        ) from exc
    assert isinstance(wanted, BulkRequest)
    if action == "replay" and not wanted.dry_run:
        refuse_while_blocked(celery_app())
    report = _run(
        lambda: bulk_actions.run(
            celery_app(), action, ids=wanted.ids, job_filter=wanted.filter, dry_run=wanted.dry_run
        )
    )
    return jsonify(report.as_dict())


def _bulk_operation(action: str, summary: str, description: str) -> Callable[[T], T]:
    return operation(
        f"{action}Jobs",
        summary,
        {
            200: Reply("what was matched and done", BulkResult),
            **BAD_BODY,
            422: Reply(
                "the body is not a selection (validation_failed), or the filter's state is not "
                "one the action applies to (state_not_eligible)"
            ),
            503: UNAVAILABLE,
        },
        body=Body(bulk_body(action)),
        description=description,
    )


@bp.post("/jobs/cancel")
@_bulk_operation(
    "cancel",
    "Cancel many waiting jobs",
    "Waiting jobs (queued, scheduled, retrying) matching the ids or filter are cancelled, "
    "each atomically: none of them runs. Others are skipped and counted.",
)
def cancel_jobs() -> Response:
    return _bulk("cancel")


@bp.post("/jobs/replay")
@_bulk_operation(
    "replay",
    "Replay many failed jobs",
    "Failed, dead-lettered jobs matching the ids or filter go back to their queues through "
    "the submission core, each keeping its id and its earlier runs in history.",
)
def replay_jobs() -> Response:
    return _bulk("replay")


@bp.post("/jobs/purge")
@_bulk_operation(
    "purge",
    "Delete many finished jobs",
    "Finished jobs (succeeded, failed, cancelled) matching the ids or filter are deleted with "
    "their index entries; a dead-lettered job's dead letter goes too.",
)
def purge_jobs() -> Response:
    return _bulk("purge")


@bp.post("/jobs/<jobid:job_id>/replay")
@operation(
    "replayJob",
    "Replay a failed job, optionally with a corrected payload",
    {
        200: Reply("replayed: the job, queued again, its earlier runs in history", Job),
        404: Reply("no job with this id"),
        409: Reply(
            "the job is not failed (job_not_replayable), or its dead letter is gone and no "
            "payload was given (payload_unavailable)"
        ),
        **BAD_BODY,
        503: UNAVAILABLE,
    },
    params=(JOB_ID,),
    body=Body(ReplayRequest, required=False, description="no body: replay as it last ran"),
    description=(
        "The job keeps its id. Its previous run goes into history with payload_digest, the "
        "SHA-256 of the payload it ran with (never the payload itself), and payload_replaced "
        "when a new payload was given. A job that failed a moment ago may wait up to 5 s for "
        "its dead letter."
    ),
)
def replay_job(job_id: str) -> Response:
    payload = None
    if request.get_data(cache=True):
        try:
            wanted = validate_json_payload(ReplayRequest, read_json_object(request))
            payload = wanted.payload  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise ApiError(
                422, "validation_failed", "the request body is invalid", validation_details(exc)
            ) from exc
    if not is_uuid(job_id):
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    refuse_while_blocked(celery_app())
    record = _run(lambda: bulk_actions.replay_job(celery_app(), job_id, payload))
    return jsonify(job_view(record))
