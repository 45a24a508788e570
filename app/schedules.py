"""Schedules over HTTP: periodic jobs, created, changed, paused, resumed and run now.

Thin: every operation is tasks/core/schedule_admin.py's (the CLI calls the same),
and this module maps its errors to the one JSON error shape. Every route needs the
``admin`` scope.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request, url_for

from app.context import celery_app
from app.errors import ApiError
from app.jobs import job_view
from app.jsonbody import read_json_object
from app.metrics import job_submitted, publish_failed
from app.models import Job
from app.operations import BAD_BODY, UNAVAILABLE, Body, Param, Reply, operation
from app.schedule_models import (
    SCHEDULE_ID,
    Schedule,
    ScheduleList,
    schedule_in,
    schedule_patch,
    schedule_view,
)
from app.submit import unavailable
from tasks.core import schedule_admin
from tasks.core.errors import Unavailable
from tasks.core.schedule_admin import (
    PAGE_DEFAULT,
    PAGE_MAX,
    DeclaredInConfig,
    ScheduleError,
    ScheduleExists,
    ScheduleNotFound,
    TooManySchedules,
)
from tasks.core.schedules import InvalidSchedule

bp = Blueprint("schedules", __name__)
T = TypeVar("T")
STATUS = {
    ScheduleNotFound: 404,
    ScheduleExists: 409,
    DeclaredInConfig: 409,
    TooManySchedules: 409,
}


@contextmanager
def _answers() -> Iterator[None]:
    """schedule_admin's errors as HTTP answers."""
    try:
        yield
    except ScheduleError as exc:
        details = {"id": exc.schedule_id}
        raise ApiError(STATUS[type(exc)], exc.code, exc.message, details=details) from exc
    except InvalidSchedule as exc:
        problems = [dict(p) for p in exc.problems]
        if exc.code == "unknown_job_type":  # as POST /jobs says it, within the problem
            problems = [{**p, **exc.extra} for p in problems]
        raise ApiError(422, exc.code, exc.message, details=problems) from exc
    except Unavailable as exc:
        raise unavailable(exc.what) from exc


def _do(action: Callable[[], T]) -> T:
    with _answers():
        return action()


def _location(schedule_id: str) -> str:
    return url_for("schedules.get_schedule", schedule_id=schedule_id)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


SCHEDULE_PARAM = Param("schedule_id", "path", SCHEDULE_ID, "the schedule's id (others answer 404)")
LOCATION = {"Location": {"schema": {"type": "string"}, "required": True}}
NOT_FOUND = Reply("no schedule with this id (schedule_not_found)")
IN_CONFIG = Reply(
    "the schedule is declared in config (declared_in_config): change or remove it there"
)
INVALID = Reply(
    "the body is JSON but not a valid schedule (validation_failed, unknown_job_type); "
    "details name each field (path), e.g. type, cron, timezone, interval_s, payload.<field>, "
    "end_at"
)
RESUME_INVALID = Reply(
    "its payload no longer fits its job type (validation_failed): it stays disabled, "
    "details name the payload's fields"
)


@bp.get("/schedules")
@operation(
    "listSchedules",
    "Schedules in id order, a page at a time",
    {
        200: Reply("a page of schedules", ScheduleList),
        400: Reply("limit is not an integer in range"),
        503: UNAVAILABLE,
    },
    params=(
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
            "page size",
        ),
        Param(
            "after",
            "query",
            {"type": "string"},
            "a cursor: the next_after of the previous page (schedules with greater ids)",
        ),
    ),
)
def list_schedules() -> Response:
    limit = _int_arg("limit", PAGE_DEFAULT, 1, PAGE_MAX)
    after = request.args.get("after", "")
    page = _do(lambda: schedule_admin.listing(celery_app(), after, limit))
    return jsonify(
        {
            "schedules": [schedule_view(s) for s in page["schedules"]],
            "next_after": page["next_after"],
        }
    )


@bp.post("/schedules")
@operation(
    "createSchedule",
    "Create a schedule; it fires from now on",
    {
        201: Reply("created", Schedule, headers=LOCATION),
        409: Reply(
            "a schedule with this id exists (schedule_exists), or there are MAX_SCHEDULES "
            "already (schedule_limit_reached)"
        ),
        **BAD_BODY,
        422: INVALID,
        503: UNAVAILABLE,
    },
    body=Body(schedule_in),
)
def create_schedule() -> tuple[Response, int, dict[str, str]]:
    body = read_json_object(request)
    view = _do(lambda: schedule_admin.create(celery_app(), body))
    return jsonify(schedule_view(view)), 201, {"Location": _location(view["id"])}


@bp.get("/schedules/<schedule_id>")
@operation(
    "getSchedule",
    "A schedule: definition, next fire, last fires and counts",
    {200: Reply("the schedule", Schedule), 404: NOT_FOUND, 503: UNAVAILABLE},
    params=(SCHEDULE_PARAM,),
)
def get_schedule(schedule_id: str) -> Response:
    return jsonify(schedule_view(_do(lambda: schedule_admin.show(celery_app(), schedule_id))))


@bp.patch("/schedules/<schedule_id>")
@operation(
    "changeSchedule",
    "Change a schedule's definition (the fields given)",
    {
        200: Reply("changed", Schedule),
        404: NOT_FOUND,
        409: IN_CONFIG,
        **BAD_BODY,
        422: INVALID,
        503: UNAVAILABLE,
    },
    params=(SCHEDULE_PARAM,),
    body=Body(schedule_patch),
    description=(
        "A change of cron, interval_s, timezone, start_at or end_at restarts the cadence "
        "from now (the new one does not backfill the old one's past). enabled: true "
        "resumes, once the payload fits the job type as it is now."
    ),
)
def change_schedule(schedule_id: str) -> Response:
    body = read_json_object(request)
    view = _do(lambda: schedule_admin.change(celery_app(), schedule_id, body))
    return jsonify(schedule_view(view))


@bp.delete("/schedules/<schedule_id>")
@operation(
    "deleteSchedule",
    "Delete a schedule (the jobs it fired stay)",
    {
        204: Reply("deleted", None),
        404: NOT_FOUND,
        409: IN_CONFIG,
        503: UNAVAILABLE,
    },
    params=(SCHEDULE_PARAM,),
)
def delete_schedule(schedule_id: str) -> tuple[str, int]:
    _do(lambda: schedule_admin.remove(celery_app(), schedule_id))
    return "", 204


@bp.post("/schedules/<schedule_id>/pause")
@operation(
    "pauseSchedule",
    "Stop a schedule firing (declared ones too)",
    {200: Reply("paused", Schedule), 404: NOT_FOUND, 503: UNAVAILABLE},
    params=(SCHEDULE_PARAM,),
)
def pause_schedule(schedule_id: str) -> Response:
    return jsonify(schedule_view(_do(lambda: schedule_admin.pause(celery_app(), schedule_id))))


@bp.post("/schedules/<schedule_id>/resume")
@operation(
    "resumeSchedule",
    "Let a schedule fire again, from its next due time",
    {
        200: Reply("resumed", Schedule),
        404: NOT_FOUND,
        422: RESUME_INVALID,
        503: UNAVAILABLE,
    },
    params=(SCHEDULE_PARAM,),
    description="The fires due while it was paused are not made up for.",
)
def resume_schedule(schedule_id: str) -> Response:
    return jsonify(schedule_view(_do(lambda: schedule_admin.resume(celery_app(), schedule_id))))


@bp.post("/schedules/<schedule_id>/run")
@operation(
    "runSchedule",
    "Fire a schedule now, out of its cadence; 202 once the broker confirmed the job",
    {
        202: Reply("the job, accepted and confirmed by the broker", Job, headers=LOCATION),
        404: NOT_FOUND,
        422: Reply(
            "its payload no longer fits its job type (validation_failed): no job, and the "
            "schedule is disabled; details name the payload's fields"
        ),
        503: UNAVAILABLE,
    },
    params=(SCHEDULE_PARAM,),
    description="Paused schedules may be run too. The cadence is untouched.",
)
def run_schedule(schedule_id: str) -> tuple[Response, int, dict[str, str]]:
    celery = celery_app()
    with _answers():
        try:
            submitted = schedule_admin.run(celery, schedule_id)
        except Unavailable as exc:
            if exc.what == "the message broker":  # counted as POST /jobs counts it
                publish_failed(_type_of(celery, schedule_id))
            raise
    record = submitted.record
    if submitted.created:
        job_submitted(record["type"])
    location = url_for("jobs.get_job", job_id=record["id"])
    return jsonify(job_view(record)), 202, {"Location": location}


def _type_of(celery: Any, schedule_id: str) -> str:
    """The schedule's job type, for a metric's label only."""
    try:
        return schedule_admin.show(celery, schedule_id)["type"]
    except (ScheduleError, Unavailable):
        return "unknown"
