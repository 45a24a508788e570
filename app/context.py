"""What a request handler reaches through the Flask app: its Celery app, and its queues."""

from flask import Flask, current_app

from app.errors import ApiError
from tasks.factory import TaskplaneCelery

CELERY_EXTENSION = "celery"


def celery_app() -> TaskplaneCelery:
    """The Celery app ``create_app`` built for the Flask app of this request or CLI call."""
    return celery_of(current_app)


def celery_of(app: Flask) -> TaskplaneCelery:
    """The Celery app ``create_app`` built for ``app`` (kept in ``app.extensions``)."""
    return app.extensions[CELERY_EXTENSION]


def known_queue(queue: str) -> str:
    """``queue`` if this environment has it, else 404 queue_not_found."""
    known = [q.name for q in celery_app().conf.task_queues]
    if queue not in known:
        raise ApiError(
            404, "queue_not_found", f"no queue named {queue!r}", details={"known": known}
        )
    return queue
