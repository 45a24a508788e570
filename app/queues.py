"""Queues over HTTP: what is in them, and pausing or resuming their consumers."""

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError

from app.context import celery_app, known_queue
from app.operations import UNAVAILABLE, Param, Reply, json_object, operation
from app.schemas import queue_name
from app.submit import refuse_while_blocked, unavailable
from tasks.core.errors import Unavailable
from tasks.core.queue_stats import queue_overview
from tasks.core.switches import pause, resume

bp = Blueprint("queues", __name__)
# The path parameter of every per-queue operation (here and app/deadletters.py).
QUEUE = Param("queue", "path", queue_name, "a queue of this environment")
UNKNOWN_QUEUE = Reply("no queue of that name here (details.known lists them)")


@bp.get("/queues")
@operation(
    "listQueues",
    "Queue depths, consumers, pause state",
    {200: json_object("queues"), 503: UNAVAILABLE},
)
def list_queues() -> Response:
    try:
        queues = queue_overview(celery_app())
    except RedisError as exc:
        raise unavailable("job storage") from exc
    except Exception as exc:  # the management API is down or refuses us
        raise unavailable("RabbitMQ's management API") from exc
    return jsonify({"queues": queues})


@bp.post("/queues/<queue>/pause")
@operation(
    "pauseQueue",
    "Stop every worker consuming the queue (remembered)",
    {200: json_object("paused"), 404: UNKNOWN_QUEUE, 503: UNAVAILABLE},
    params=(QUEUE,),
)
def pause_queue(queue: str) -> Response:
    return _switch(queue, pause, paused=True)


@bp.post("/queues/<queue>/resume")
@operation(
    "resumeQueue",
    "Let the queue's workers consume it again",
    {200: json_object("resumed"), 404: UNKNOWN_QUEUE, 503: UNAVAILABLE},
    params=(QUEUE,),
)
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
