"""The worker's side of the per-queue consumer switches.

At start, a worker drops the queues of other groups, disabled ones and those
an operator paused (tasks/core/switches.py keeps the pauses); at run time it
answers ``taskplane_resume`` only for queues its group runs.
"""

import logging
from typing import Any

from celery.worker.control import control_command
from redis.exceptions import RedisError

from tasks.core.switches import enabled_queues, paused_queues, worker_group

logger = logging.getLogger("taskplane.consumers")


def apply_worker_group(app: Any) -> None:
    """Pool, concurrency and prefetch of this worker's group, unless given on the command line."""
    group = worker_group(app)
    if group is None:
        return
    settings = app.conf.taskplane_worker_groups[group]
    app.conf.worker_pool = settings.get("pool") or app.conf.worker_pool
    if settings.get("concurrency"):
        app.conf.worker_concurrency = int(settings["concurrency"])
    if settings.get("prefetch_multiplier"):
        app.conf.worker_prefetch_multiplier = int(settings["prefetch_multiplier"])


@control_command(args=[("queue", str)], signature="<queue>")
def taskplane_resume(state: Any, queue: str, **_: Any) -> dict:
    """Remote control: like ``add_consumer``, but only where this worker's group runs ``queue``.

    A plain ``add_consumer`` broadcast would make an io-group worker start
    consuming the cpu group's queue.
    """
    app = state.consumer.app
    if queue not in enabled_queues(app, worker_group(app)):
        return {"skipped": f"{queue} is not run by this worker's group"}
    state.consumer.call_soon(state.consumer.add_task_queue, queue)
    return {"ok": f"add consumer {queue}"}


def apply_at_worker_start(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """``celeryd_after_setup``: drop other groups', disabled and paused queues before consuming.

    If Redis cannot be read now, the worker consumes every enabled queue: a
    worker that consumes too much is safer than one that silently consumes
    nothing.
    """
    app = instance.app
    skip = {q.name for q in app.conf.task_queues} - set(enabled_queues(app, worker_group(app)))
    try:
        skip |= paused_queues(app)
    except RedisError as exc:
        logger.warning("could not read paused queues (%s); consuming all enabled ones", exc)
    if skip:
        logger.info("not consuming %s (disabled or paused)", ", ".join(sorted(skip)))
        app.amqp.queues.deselect(sorted(skip))
