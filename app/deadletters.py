"""Dead letters over HTTP: list, replay, purge (per queue).

The limits below are the ones the API document states (app/openapi.py reads
them from here): a page of at most ``PAGE_MAX`` dead letters, a selection of
at most ``MAX_IDS`` ids.
"""

from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.context import celery_app, known_queue
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.operations import BAD_BODY, UNAVAILABLE, Body, Param, Reply, json_object, operation
from app.queues import QUEUE, UNKNOWN_QUEUE
from app.submit import refuse_while_blocked, unavailable
from tasks.core.deadletters import list_dead, purge_dead, replay_dead
from tasks.core.errors import Unavailable
from tasks.core.validation import validation_details

bp = Blueprint("deadletters", __name__)
PAGE_DEFAULT = 50
PAGE_MAX = 500
MAX_OFFSET = 10**9
MAX_IDS = 10_000


class IdSelection(BaseModel):
    """Which dead letters to act on; all of them when ``ids`` is absent."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(
        default=None, max_length=MAX_IDS, description="dead letters to act on; all if absent"
    )


def _selection() -> list[str] | None:
    if not request.get_data(cache=True):
        return None
    try:
        return IdSelection.model_validate(read_json_object(request)).ids
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "the request body is invalid", details=validation_details(exc)
        ) from exc


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


def _guarded(action: Any) -> Any:
    try:
        return action()
    except Unavailable as exc:
        raise unavailable(exc.what) from exc


SELECTION = Body(IdSelection, required=False, description="no body: every dead letter")


@bp.get("/queues/<queue>/dead")
@operation(
    "listDeadLetters",
    "Dead-lettered jobs, newest first",
    {
        200: json_object("a page of dead letters"),
        400: Reply("offset or limit is not an integer in range"),
        404: UNKNOWN_QUEUE,
        503: UNAVAILABLE,
    },
    params=(
        QUEUE,
        Param(
            "offset",
            "query",
            {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
            "how many of the newest to skip",
        ),
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
            "page size",
        ),
    ),
)
def list_dead_letters(queue: str) -> Response:
    offset = _int_arg("offset", 0, 0, MAX_OFFSET)
    limit = _int_arg("limit", PAGE_DEFAULT, 1, PAGE_MAX)
    app = celery_app()
    return jsonify(_guarded(lambda: list_dead(app, known_queue(queue), offset, limit)))


@bp.post("/queues/<queue>/dead/replay")
@operation(
    "replayDeadLetters",
    "Send dead letters back to their queue, same ids",
    {200: json_object("replayed"), **BAD_BODY, 404: UNKNOWN_QUEUE, 503: UNAVAILABLE},
    params=(QUEUE,),
    body=SELECTION,
)
def replay_dead_letters(queue: str) -> Response:
    ids = _selection()
    app = celery_app()
    refuse_while_blocked(app)
    report = _guarded(lambda: replay_dead(app, known_queue(queue), ids))
    return jsonify({"queue": queue, "replayed": report.replayed, "not_found": report.not_found})


@bp.delete("/queues/<queue>/dead")
@operation(
    "purgeDeadLetters",
    "Drop dead letters (all, or the listed ids)",
    {200: json_object("purged"), **BAD_BODY, 404: UNKNOWN_QUEUE, 503: UNAVAILABLE},
    params=(QUEUE,),
    body=SELECTION,
)
def purge_dead_letters(queue: str) -> Response:
    ids = _selection()
    app = celery_app()
    return jsonify(
        {"queue": queue, "purged": _guarded(lambda: purge_dead(app, known_queue(queue), ids))}
    )
