"""Prometheus metrics of the web, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py sets it), every
worker writes its samples to files there and ``/metrics`` merges them
(prometheus-client's multiprocess mode). Queue depths and consumer counts are
read from RabbitMQ at scrape time, not counted by us.
"""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.multiprocess import MultiProcessCollector

from app.context import celery_of
from app.operations import Reply, operation
from tasks.core.queue_stats import queue_overview
from tasks.core.schedules import COUNTS, LAG_BUCKETS
from tasks.scheduler.lease import LEADER_KEY

bp = Blueprint("metrics", __name__)
# Routes whose deadline counter exists from the start, at 0 (others appear when hit).
DEADLINE_ROUTES = ("/jobs", "/jobs/batch")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class WebMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    submitted: Counter
    publish_failures: Counter
    deadlines: Counter


def _build(multiprocess: bool) -> WebMetrics:
    # In multiprocess mode samples go to files, and the scrape-time registry
    # reads them; the objects themselves must not be registered anywhere.
    registry = CollectorRegistry()
    target = None if multiprocess else registry
    return WebMetrics(
        registry=registry,
        requests=Counter(
            "taskplane_http_requests",
            "HTTP requests handled",
            ["route", "method", "status"],
            registry=target,
        ),
        latency=Histogram(
            "taskplane_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        ),
        submitted=Counter(
            "taskplane_jobs_submitted", "jobs accepted (202) by type", ["type"], registry=target
        ),
        publish_failures=Counter(
            "taskplane_publish_failures",
            "submissions refused because the broker did not confirm",
            ["type"],
            registry=target,
        ),
        deadlines=Counter(
            "taskplane_request_deadline_exceeded",
            "requests answered 503 because the broker or Redis did not answer within the bound",
            ["route"],
            registry=target,
        ),
    )


class QueueCollector:
    """Per-queue depth (ready, unacked, dead), consumers and pause state, at scrape time."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        messages = GaugeMetricFamily(
            "taskplane_queue_messages", "messages in a job queue", labels=["queue", "state"]
        )
        consumers = GaugeMetricFamily(
            "taskplane_queue_consumers", "consumers of a job queue", labels=["queue"]
        )
        paused = GaugeMetricFamily(
            "taskplane_queue_paused", "1 when an operator paused it", labels=["queue"]
        )
        try:
            with self.app.app_context():
                overview = queue_overview(celery_of(self.app))
        except Exception:  # noqa: BLE001 - a scrape must not fail because RabbitMQ did
            overview = []
        for queue in overview:
            name = queue["name"]
            for state in ("ready", "unacked", "dead"):
                value = queue.get(state)
                if value is not None:
                    messages.add_metric([name, state], value)
            if queue.get("consumers") is not None:
                consumers.add_metric([name], queue["consumers"])
            paused.add_metric([name], 1 if queue.get("paused") else 0)
        yield from (messages, consumers, paused)


class BrokerCollector:
    """Whether this web process knows RabbitMQ to be blocking publishers, at scrape time.

    Every web process watches the same broker, so the one that answers the
    scrape speaks for all (a gauge in files would outlive a dead process).
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        celery = celery_of(self.app)
        celery.broker_watch.ensure_started()
        blocked = GaugeMetricFamily(
            "taskplane_broker_blocked",
            "1 while RabbitMQ blocks publishers (a memory or disk alarm): submits answer 503",
        )
        blocked.add_metric([], 1 if celery.broker_alarm.reason is not None else 0)
        yield blocked


class ScheduleCollector:
    """Fires per schedule and outcome, fire lag, and the leader's heartbeat, at scrape time.

    Read from Redis, where every scheduler records its fires exactly once, so the
    numbers are the cluster's whichever scheduler leads (and survive its death).
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        celery = celery_of(self.app)
        fires = CounterMetricFamily(
            "taskplane_schedule_fires",
            "fires of a schedule by outcome: fired (a job), skipped (overlap), missed (policy)",
            labels=["schedule", "outcome"],
        )
        lag = HistogramMetricFamily(
            "taskplane_schedule_fire_lag_seconds",
            "how late a fire's job was created after its due time",
            labels=["schedule"],
        )
        heartbeat = GaugeMetricFamily(
            "taskplane_scheduler_leader_heartbeat_timestamp_seconds",
            "Unix time the scheduler holding the leader lease last renewed it (0: never)",
        )
        try:
            schedules = celery.schedules.all()
            beat = celery.jobstore.redis.hget(LEADER_KEY, "heartbeat")
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis did
            return
        for stored in schedules:
            for outcome in COUNTS:
                fires.add_metric([stored.id, outcome], stored.counts.get(outcome, 0))
            running, buckets = 0, []
            for bound, count in zip((*LAG_BUCKETS, float("inf")), stored.lag_buckets, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), running))
            lag.add_metric([stored.id], buckets, stored.lag_sum)
        heartbeat.add_metric([], float(beat) if beat else 0.0)
        yield from (fires, lag, heartbeat)


def init_app(app: Flask) -> None:
    multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    metrics = _build(multiprocess)
    # Every job type's counters exist from the start, at 0, so alerts and
    # dashboards see "no failures" rather than "no data".
    for job_type in celery_of(app).job_types:
        metrics.submitted.labels(job_type)
        metrics.publish_failures.labels(job_type)
    for route in DEADLINE_ROUTES:
        metrics.deadlines.labels(route)
    app.extensions["metrics"] = metrics
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)


def _start_timer() -> None:
    g.taskplane_started = time.perf_counter()


def _observe(response: Response) -> Response:
    metrics: WebMetrics = current_app.extensions["metrics"]
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("taskplane_started")
    metrics.requests.labels(route, request.method, str(response.status_code)).inc()
    if started is not None:
        metrics.latency.labels(route, request.method).observe(time.perf_counter() - started)
    if g.get("taskplane_deadline_exceeded"):
        metrics.deadlines.labels(route).inc()
    return response


def job_submitted(job_type: str, count: int = 1) -> None:
    current_app.extensions["metrics"].submitted.labels(job_type).inc(count)


def publish_failed(job_type: str, count: int = 1) -> None:
    current_app.extensions["metrics"].publish_failures.labels(job_type).inc(count)


@bp.get("/metrics")
@operation(
    "metrics",
    "Prometheus metrics of the web (all its workers) and of the queues",
    {200: Reply("Prometheus text format", {"type": "string"}, media_type="text/plain")},
)
def metrics_endpoint() -> Response:
    app: Any = current_app._get_current_object()  # noqa: SLF001 - the real app for the collector
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = app.extensions["metrics"].registry
    registry_with_queues = CollectorRegistry()
    registry_with_queues.register(QueueCollector(app))
    registry_with_queues.register(BrokerCollector(app))
    registry_with_queues.register(ScheduleCollector(app))
    body = generate_latest(registry) + generate_latest(registry_with_queues)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
