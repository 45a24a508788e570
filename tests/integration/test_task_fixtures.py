"""Task-level tests on pytest-celery's classic fixtures, with Taskplane's real Celery app.

``celery_app`` is overridden to return the app ``celery -A tasks`` runs (testing
profile) on a RabbitMQ vhost and a Redis database of this module's own, and
``celery_worker`` starts Celery's embedded worker on it in a thread of this
process: our consumer class and consumer steps, the quorum job queues, native
delayed delivery, acks late and dead-lettering, all against the real services.
Jobs enter through the submission core, as every producer's do, and the tests
read the job records. No eager mode, no mocks. Kills and signals need real
worker processes and stay in test_reliability.py and tests/chaos.

pytest-celery 1.x's plugin registers celery.contrib.pytest's classic fixtures
(``celery_app``, ``celery_worker_parameters``, ...), but its own ``celery_worker``,
a Docker container parametrized over worker images, shadows the classic one of
the same name (celery/pytest-celery#442). This module binds the classic one back.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celery.contrib.pytest as classic
import pytest
import redis
from celery.contrib.testing.app import setup_default_app
from kombu import Connection

from tasks.core.queues import dead_letter_queue_name
from tasks.core.submission import check, submit
from tasks.factory import TaskplaneCelery, create_celery_app
from tasks.jobs.diagnostics.jobs import EFFECTS_KEY
from tests.services import RabbitMQ, RedisServer, wait_until

pytestmark = pytest.mark.integration

# The classic, in-process worker fixture (see the module's docstring).
celery_worker = classic.celery_worker

QUEUE = "diagnostics"  # the queue of every diagnostics.* job type
FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Services:
    vhost: str
    broker: str
    backend: str


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    rabbit, redis_server = RabbitMQ(), RedisServer()
    vhost = f"taskplane-fixtures-{uuid.uuid4().hex[:8]}"
    broker = rabbit.create_vhost(vhost)
    _, backend = redis_server.claim_database(owner="task-fixtures")
    try:
        yield Services(vhost, broker, backend)
    finally:
        redis_server.release_database(backend)
        rabbit.delete_vhost(vhost)


@pytest.fixture(scope="module")
def celery_app(services: Services) -> Iterator[TaskplaneCelery]:
    """Taskplane's own app, as the worker CLI builds it, on this module's services."""
    app = create_celery_app(
        "testing", overrides={"broker_url": services.broker, "result_backend": services.backend}
    )
    # What the classic celery_app fixture does: the embedded worker makes the
    # app the process's current and default one; put the previous ones back.
    with setup_default_app(app):
        yield app


@pytest.fixture(scope="module")
def celery_worker_pool() -> str:
    # The io group's pool. The classic default, "solo", leaves the next message
    # of a queue undelivered after each job until the event loop's next timer
    # (up to 10 s; plain Celery 5.7 does the same with any app), which turns a
    # one-second retry into ten.
    return "threads"


@pytest.fixture(scope="module")
def celery_worker_parameters() -> dict[str, Any]:
    return {
        "concurrency": 2,
        # The ping check sends celery.ping, which Taskplane's app does not have
        # (and would route to a job queue). The fixture returns once the
        # consumer is ready; the tests then check on RabbitMQ that it consumes.
        "perform_ping_check": False,
        # The worker's event heartbeat is a 2 s timer in its event loop; without
        # it (the embedded worker's default) a stop waits up to 10 s for the loop.
        "without_heartbeat": False,
        "shutdown_timeout": 20,
    }


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    """The worker's setup_logging signal runs Taskplane's configure_logging, which
    replaces the root logger's handlers; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def queue_counts(broker: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, live from RabbitMQ."""
    with Connection(broker, connect_timeout=5) as conn:
        _, ready, consumers = conn.default_channel.queue_declare(queue, passive=True)
        return ready, consumers


def run_job(app: TaskplaneCelery, job: dict, job_id: str | None = None) -> str:
    """Submit one job through the submission core; its id once RabbitMQ confirmed it."""
    (submitted,) = submit(app, [check(app, job, job_id=job_id)])
    assert submitted.created
    return submitted.record["id"]


def final_record(app: TaskplaneCelery, job_id: str, timeout: float = 10) -> dict:
    def done() -> dict | None:
        record = app.jobstore.get(job_id)
        return record if record and record["state"] in FINAL else None

    return wait_until(done, timeout, 0.05, what=f"job {job_id} to finish")  # type: ignore[return-value]


def test_a_job_waits_in_rabbitmq_until_the_embedded_worker_runs_it(
    celery_app: TaskplaneCelery, services: Services, request: pytest.FixtureRequest
) -> None:
    job = {"type": "diagnostics.echo", "payload": {"data": {"n": [1, 2]}}}
    job_id = run_job(celery_app, job)
    assert queue_counts(services.broker, QUEUE) == (1, 0)  # confirmed, nobody consuming
    assert celery_app.jobstore.get(job_id)["state"] == "queued"

    request.getfixturevalue("celery_worker")  # pytest-celery's classic worker, started now
    assert queue_counts(services.broker, QUEUE)[1] == 1
    # The worker's own consumer step declared the dead-letter queue on connect.
    assert queue_counts(services.broker, dead_letter_queue_name(QUEUE)) == (0, 0)
    record = final_record(celery_app, job_id)

    assert record["state"] == "succeeded", record
    assert record["result"] == {"data": {"n": [1, 2]}}
    assert record["attempts"] == 1
    # Acked late, once done: the queue is empty.
    wait_until(lambda: queue_counts(services.broker, QUEUE)[0] == 0, 5, what="an empty queue")


def test_a_transient_failure_retries_through_the_broker_and_succeeds(
    celery_app: TaskplaneCelery, celery_worker: Any
) -> None:
    started = time.monotonic()
    job_id = run_job(celery_app, {"type": "diagnostics.fail", "payload": {"times": 1}})

    retrying = wait_until(
        lambda: (r := celery_app.jobstore.get(job_id)) and r["state"] in ("retrying", *FINAL) and r,
        10,
        0.02,
        what="the first attempt to fail",
    )
    assert retrying["state"] == "retrying", retrying
    assert retrying["attempts"] == 1
    assert retrying["error"]["type"] == "transient"
    assert retrying["next_attempt_at"]
    record = final_record(celery_app, job_id)
    elapsed = time.monotonic() - started

    assert record["state"] == "succeeded", record
    assert record["attempts"] == 2
    assert record["result"] == {"failed_attempts": 1}
    assert record["error"] is None
    # The second attempt came back through native delayed delivery, which
    # counts whole seconds (at least one), not through an in-process retry.
    assert elapsed >= 0.9, f"the retry ran after {elapsed:.2f}s, sooner than its delay"


def test_a_permanent_failure_fails_at_once_and_is_dead_lettered(
    celery_app: TaskplaneCelery, celery_worker: Any, services: Services
) -> None:
    dead = dead_letter_queue_name(QUEUE)
    dead_before = queue_counts(services.broker, dead)[0]
    job = {"type": "diagnostics.fail", "payload": {"permanent": True, "message": "no way"}}
    job_id = run_job(celery_app, job)
    record = final_record(celery_app, job_id)

    assert record["state"] == "failed", record
    assert record["attempts"] == 1
    assert record["error"]["type"] == "permanent"
    assert record["error"]["exception"] == "PermanentError"
    assert "no way" in record["error"]["message"]
    # Rejected, not acked: RabbitMQ moved the message to the queue's dead letters.
    wait_until(
        lambda: queue_counts(services.broker, dead)[0] == dead_before + 1,
        5,
        what="the failed job's message in the dead-letter queue",
    )


def test_an_effect_happens_once_even_when_the_job_is_submitted_twice(
    celery_app: TaskplaneCelery, celery_worker: Any, services: Services
) -> None:
    job = {"type": "diagnostics.sleep", "payload": {"seconds": 0.1, "effect": True}}
    job_id = str(uuid.uuid4())
    run_job(celery_app, job, job_id=job_id)
    # A second producer with the same deterministic id gets the existing job.
    (again,) = submit(celery_app, [check(celery_app, job, job_id=job_id)])
    assert not again.created
    record = final_record(celery_app, job_id)

    assert record["state"] == "succeeded", record
    assert record["result"] == {"slept_s": 0.1}
    assert record["attempts"] == 1
    effects = redis.Redis.from_url(services.backend)
    assert effects.hget(EFFECTS_KEY, job_id) == b"1"
    time.sleep(0.3)  # a second message, had one been published, would have run by now
    assert effects.hget(EFFECTS_KEY, job_id) == b"1"
    assert queue_counts(services.broker, QUEUE)[0] == 0


def test_a_delayed_job_waits_in_the_broker_then_runs(
    celery_app: TaskplaneCelery, celery_worker: Any
) -> None:
    job = {"type": "diagnostics.echo", "payload": {"data": "later"}, "delay_s": 1}
    started = time.monotonic()
    job_id = run_job(celery_app, job)
    scheduled = celery_app.jobstore.get(job_id)
    assert scheduled["state"] == "scheduled", scheduled
    assert scheduled["scheduled_for"]

    record = final_record(celery_app, job_id)
    elapsed = time.monotonic() - started

    assert record["state"] == "succeeded", record
    assert record["result"] == {"data": "later"}
    assert elapsed >= 0.9, f"a job delayed by 1 s ran after {elapsed:.2f}s"
