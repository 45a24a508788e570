"""Per-queue consumer switches: configured per environment, flipped at run time.

``taskplane_queues`` in the environment's config says which queues workers
consume. At run time an operator pauses or resumes a queue: every worker is
told through Celery's own remote control (``cancel_consumer`` /
``add_consumer``, the same as the CLI), and the choice is kept in Redis, so a
worker that starts later comes up paused for that queue too.
"""

import logging
from typing import Any

from redis.exceptions import RedisError

logger = logging.getLogger("taskplane.consumers")
PAUSED_KEY = "taskplane:paused-queues"


def enabled_queues(app: Any) -> list[str]:
    """Queues this environment's workers consume (all declared queues unless disabled)."""
    settings = app.conf.taskplane_queues or {}
    return [q.name for q in app.conf.task_queues if settings.get(q.name, {}).get("enabled", True)]


def paused_queues(app: Any) -> set[str]:
    return {
        m.decode() if isinstance(m, bytes) else m for m in app.jobstore.redis.smembers(PAUSED_KEY)
    }


def pause(app: Any, queue: str) -> list[dict]:
    app.jobstore.redis.sadd(PAUSED_KEY, queue)
    return app.control.cancel_consumer(queue, reply=True, timeout=1.0) or []


def resume(app: Any, queue: str) -> list[dict]:
    app.jobstore.redis.srem(PAUSED_KEY, queue)
    if queue not in enabled_queues(app):
        return []
    return app.control.add_consumer(queue, reply=True, timeout=1.0) or []


def apply_at_worker_start(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """``celeryd_after_setup``: drop disabled and paused queues before consuming starts.

    If Redis cannot be read now, the worker consumes every enabled queue: a
    worker that consumes too much is safer than one that silently consumes
    nothing.
    """
    app = instance.app
    skip = {q.name for q in app.conf.task_queues} - set(enabled_queues(app))
    try:
        skip |= paused_queues(app)
    except RedisError as exc:
        logger.warning("could not read paused queues (%s); consuming all enabled ones", exc)
    if skip:
        logger.info("not consuming %s (disabled or paused)", ", ".join(sorted(skip)))
        app.amqp.queues.deselect(sorted(skip))
