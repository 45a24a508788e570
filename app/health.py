"""Health endpoints for load balancers and orchestrators.

``/health/ready`` checks RabbitMQ, Redis and that every enabled, unpaused
queue has a consumer (a passive queue declare: current, and cheap). The
checks run in parallel, each bounded, so the answer comes within a second
even when a component hangs, and results are cached briefly so a probe storm
does not hammer the broker. A broker that answers but blocks publishers (a
memory or disk alarm) is ``BLOCKED``, and a Redis that answers but refuses
writes (out of memory, a read-only replica) is ``DOWN``: either way no job
can be accepted, so the web is not ready.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from app.context import celery_app
from app.models import HealthStatus
from app.operations import Reply, json_object, operation
from tasks.core.probes import check_broker, check_redis

bp = Blueprint("health", __name__)


@dataclass
class HealthCache:
    """Last results per component, shared by the threads of one web process."""

    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
    )
    lock: threading.Lock = field(default_factory=threading.Lock)
    results: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)


@bp.get("/health/live")
@operation("live", "The process serves", {200: Reply("serving", HealthStatus)})
def live() -> Response:
    """The process serves requests; says nothing about its dependencies."""
    return jsonify({"status": "UP"})


@bp.get("/health/ready")
@operation(
    "ready",
    "Broker, Redis and consumers, per component",
    {200: json_object("ready"), 503: json_object("not ready; components say which")},
)
def ready() -> tuple[Response, int]:
    celery = celery_app()
    cache: HealthCache = current_app.extensions["health"]
    timeout = float(celery.conf.taskplane_health_timeout_s)
    ttl = float(celery.conf.taskplane_health_cache_s)
    checks = {"rabbitmq": lambda: check_broker(celery), "redis": lambda: check_redis(celery)}
    results = run_checks(cache, checks, timeout, ttl)
    broker = results["rabbitmq"]
    workers = broker.pop("queues", None) or {}
    components = {"rabbitmq": broker, "redis": results["redis"], "workers": workers}
    up = (
        broker["status"] == "UP"
        and results["redis"]["status"] == "UP"
        and all(q["status"] in ("UP", "PAUSED") for q in workers.values())
    )
    body = {"status": "UP" if up else "DOWN", "components": components}
    return jsonify(body), 200 if up else 503


def run_checks(
    cache: HealthCache, checks: dict[str, Any], timeout: float, ttl: float
) -> dict[str, dict[str, Any]]:
    now = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    pending = {}
    with cache.lock:
        for name, check in checks.items():
            cached = cache.results.get(name)
            if cached and now - cached[0] < ttl:
                results[name] = dict(cached[1], queues=dict(cached[1].get("queues") or {}))
            else:
                pending[name] = cache.executor.submit(_timed, check)
    deadline = now + timeout
    for name, future in pending.items():
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            result = {"status": "DOWN", "error": f"no answer within {timeout}s"}
        except Exception as exc:  # noqa: BLE001 - any failure means the component is down
            result = {"status": "DOWN", "error": f"{type(exc).__name__}: {exc}"[:300]}
        with cache.lock:
            cache.results[name] = (time.monotonic(), result)
        results[name] = dict(result, queues=dict(result.get("queues") or {}))
    for result in results.values():
        if not result["queues"]:
            result.pop("queues")
    return results


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = check()
    result.setdefault("latency_ms", round((time.perf_counter() - started) * 1000, 1))
    return result


def init_app(app: Flask) -> None:
    app.extensions["health"] = HealthCache()
    app.register_blueprint(bp)
