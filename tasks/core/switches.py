"""Per-queue consumer switches: configured per environment, flipped at run time.

``taskplane_queues`` in the environment's config says which queues workers
consume. At run time an operator pauses or resumes a queue: every worker is
told through Celery's own remote control (``cancel_consumer`` /
``add_consumer``, the same as the CLI), and the choice is kept in Redis, so a
worker that starts later comes up paused for that queue too.
"""

import logging
import os
from typing import Any

from tasks.core.errors import unavailable_as_one_error

logger = logging.getLogger("taskplane.consumers")
PAUSED_KEY = "taskplane:paused-queues"
GROUP_ENV = "TASKPLANE_WORKER_GROUP"


def enabled_queues(app: Any, group: str | None = None) -> list[str]:
    """Queues this environment's workers consume (of one worker group, if given)."""
    settings = app.conf.taskplane_queues or {}
    return [
        q.name
        for q in app.conf.task_queues
        if settings.get(q.name, {}).get("enabled", True)
        and (group is None or settings.get(q.name, {}).get("group") == group)
    ]


def worker_group(app: Any) -> str | None:
    """The group named by TASKPLANE_WORKER_GROUP, checked against the config."""
    name = os.environ.get(GROUP_ENV) or None
    if name is not None and name not in (app.conf.taskplane_worker_groups or {}):
        raise SystemExit(
            f"{GROUP_ENV}={name!r} is not a worker group in this environment's "
            f"config: {sorted(app.conf.taskplane_worker_groups or {})}"
        )
    return name


def group_processes(app: Any, group: str) -> int:
    """How many worker processes of ``group`` one host runs (config "processes", None: per CPU)."""
    count = (app.conf.taskplane_worker_groups or {})[group].get("processes", 1)
    return int(count) if count is not None else (os.cpu_count() or 1)


def paused_queues(app: Any) -> set[str]:
    return {
        m.decode() if isinstance(m, bytes) else m for m in app.jobstore.redis.smembers(PAUSED_KEY)
    }


@unavailable_as_one_error
def pause(app: Any, queue: str) -> list[dict]:
    """Remember the pause, then tell every worker; if the broker cannot be told, forget it."""
    app.jobstore.redis.sadd(PAUSED_KEY, queue)
    try:
        return app.control.cancel_consumer(queue, reply=True, timeout=1.0) or []
    except Exception:
        app.jobstore.redis.srem(PAUSED_KEY, queue)
        raise


@unavailable_as_one_error
def resume(app: Any, queue: str) -> list[dict]:
    """Every worker whose group runs ``queue`` consumes it again (others ignore it)."""
    was_paused = app.jobstore.redis.srem(PAUSED_KEY, queue)
    if queue not in enabled_queues(app):
        return []
    try:
        replies = app.control.broadcast(
            "taskplane_resume", arguments={"queue": queue}, reply=True, timeout=1.0
        )
    except Exception:
        if was_paused:
            app.jobstore.redis.sadd(PAUSED_KEY, queue)
        raise
    return [reply for reply in replies or [] if "ok" in next(iter(reply.values()), {})]
