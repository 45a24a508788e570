"""Queues over HTTP: what is in them, and pausing or resuming their consumers."""

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError

from app.context import celery_app, known_queue
from app.submit import refuse_while_blocked, unavailable
from tasks.core.errors import Unavailable
from tasks.core.queue_stats import queue_overview
from tasks.core.switches import pause, resume

bp = Blueprint("queues", __name__)


@bp.get("/queues")
def list_queues() -> Response:
    try:
        queues = queue_overview(celery_app())
    except RedisError as exc:
        raise unavailable("job storage") from exc
    except Exception as exc:  # the management API is down or refuses us
        raise unavailable("RabbitMQ's management API") from exc
    return jsonify({"queues": queues})


@bp.post("/queues/<queue>/pause")
def pause_queue(queue: str) -> Response:
    return _switch(queue, pause, paused=True)


@bp.post("/queues/<queue>/resume")
def resume_queue(queue: str) -> Response:
    return _switch(queue, resume, paused=False)


def _switch(queue: str, action: Callable[[Any, str], list[dict]], paused: bool) -> Response:
    """Pause or resume every worker's consumer; 503 when Redis or the broker is away."""
    celery = celery_app()
    refuse_while_blocked(celery)
    try:
        replies = action(celery, known_queue(queue))
    except Unavailable as exc:
        raise unavailable(exc.what) from exc
    return jsonify({"queue": queue, "paused": paused, "workers": _nodes(replies)})


def _nodes(replies: list[dict]) -> list[str]:
    return sorted(node for reply in replies for node in reply)
