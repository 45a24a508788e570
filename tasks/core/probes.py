"""Readiness probes of the platform's two services, each ending by its own deadline.

The web's ``/health/ready`` runs them; they are not HTTP, so they live here.
"""

from typing import Any

from tasks.core.queue_stats import declared_counts
from tasks.core.switches import enabled_queues, paused_queues

WRITE_PROBE_KEY = "taskplane:health:write-probe"
WRITE_PROBE_TTL_MS = 10_000


def check_broker(celery: Any) -> dict[str, Any]:
    """Each enabled queue's consumer count, read with a passive declare (current and cheap).

    Ends by the check's own timeout (the connection is dropped, not closed,
    when the broker does not answer in time), so a frozen broker cannot keep
    a health thread forever.
    """
    celery.broker_watch.ensure_started()
    paused = _paused_or_empty(celery)
    counts = declared_counts(
        celery, enabled_queues(celery), float(celery.conf.taskplane_health_timeout_s)
    )
    queues: dict[str, dict[str, Any]] = {}
    for name, count in counts.items():
        if count is None:  # not declared yet: no worker ever consumed it
            queues[name] = {"status": "DOWN", "consumers": 0}
            continue
        consumers = count[1]
        if name in paused:
            status = "PAUSED"
        else:
            status = "UP" if consumers > 0 else "DOWN"
        queues[name] = {"status": status, "consumers": consumers}
    alarm = celery.broker_alarm.describe()
    if alarm is not None:
        return {"status": "BLOCKED", **alarm, "queues": queues}
    return {"status": "UP", "queues": queues}


def _paused_or_empty(celery: Any) -> set[str]:
    try:
        return paused_queues(celery)
    except Exception:  # noqa: BLE001 - Redis is reported by its own check
        return set()


def check_redis(celery: Any) -> dict[str, Any]:
    """A write, not a PING: a Redis out of memory or read-only still answers PING."""
    celery.jobstore.redis.set(WRITE_PROBE_KEY, "1", px=WRITE_PROBE_TTL_MS)
    return {"status": "UP"}
