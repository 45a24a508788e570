"""Dead letters over HTTP: list, replay, purge (per queue)."""

from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.context import celery_app, known_queue
from app.errors import ApiError
from app.jsonbody import read_json_object
from app.submit import refuse_while_blocked, unavailable
from tasks.core.deadletters import list_dead, purge_dead, replay_dead
from tasks.core.errors import Unavailable
from tasks.core.validation import validation_details

bp = Blueprint("deadletters", __name__)


class IdSelection(BaseModel):
    """Which dead letters to act on; all of them when ``ids`` is absent."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=10_000)


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


@bp.get("/queues/<queue>/dead")
def list_dead_letters(queue: str) -> Response:
    offset = _int_arg("offset", 0, 0, 10**9)
    limit = _int_arg("limit", 50, 1, 500)
    app = celery_app()
    return jsonify(_guarded(lambda: list_dead(app, known_queue(queue), offset, limit)))


@bp.post("/queues/<queue>/dead/replay")
def replay_dead_letters(queue: str) -> Response:
    ids = _selection()
    app = celery_app()
    refuse_while_blocked(app)
    report = _guarded(lambda: replay_dead(app, known_queue(queue), ids))
    return jsonify({"queue": queue, "replayed": report.replayed, "not_found": report.not_found})


@bp.delete("/queues/<queue>/dead")
def purge_dead_letters(queue: str) -> Response:
    ids = _selection()
    app = celery_app()
    return jsonify(
        {"queue": queue, "purged": _guarded(lambda: purge_dead(app, known_queue(queue), ids))}
    )
