"""The submission core with deterministic ids: producers racing on one id make one job.

Real RabbitMQ (a vhost of this module's own, so queue depths are this module's alone)
and a real Redis database; the worker is started only once the racing producers are
done, so the test can count the messages they left in the queue before anything runs.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kombu import Connection

from tasks.core.jobstore import NewRecord, utcnow
from tasks.core.submission import NewJob, Submitted, check, submit
from tasks.factory import TaskplaneCelery, create_celery_app
from tests.services import Platform, RabbitMQ, RedisServer, wait_until

pytestmark = pytest.mark.integration
EFFECTS_KEY = "taskplane:diagnostics:effects"
SLEEP_ONCE = {"type": "diagnostics.sleep", "payload": {"seconds": 0, "effect": True}}


@dataclass
class Core:
    broker: str
    backend: str
    app: TaskplaneCelery
    platform: Platform


@pytest.fixture(scope="module")
def core(platform: Platform) -> Iterator[Core]:
    rabbit, redis_server = RabbitMQ(), RedisServer()
    vhost = f"taskplane-core-{uuid.uuid4().hex[:8]}"
    broker = rabbit.create_vhost(vhost)
    _, backend = redis_server.claim_database(owner="submission-core")
    env = {**platform.env, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": backend}
    own = Platform(env=env, log_dir=platform.log_dir)
    app = create_celery_app(
        "testing",
        overrides={"broker_url": broker, "result_backend": backend},
        patient_storage=False,
    )
    try:
        yield Core(broker, backend, app, own)
    finally:
        own.stop_all()
        redis_server.release_database(backend)
        rabbit.delete_vhost(vhost)


def ready_messages(broker: str, queue: str) -> int:
    with Connection(broker, connect_timeout=5) as conn:
        _, ready, _ = conn.default_channel.queue_declare(queue, passive=True)
        return ready


def submit_once(app: TaskplaneCelery, job_id: str) -> Submitted:
    (submitted,) = submit(app, [check(app, SLEEP_ONCE, job_id=job_id)])
    return submitted


def _submit_in_process(broker: str, backend: str, job_id: str, start: float, out) -> None:  # noqa: ANN001
    """One producer process: its own app, publisher and Redis pool, released at ``start``."""
    app = create_celery_app(
        "testing",
        overrides={"broker_url": broker, "result_backend": backend},
        patient_storage=False,
    )
    job = check(app, SLEEP_ONCE, job_id=job_id)
    time.sleep(max(0.0, start - time.time()))
    (submitted,) = submit(app, [job])
    out.put((submitted.created, submitted.record["id"]))


def record_unconfirmed(core: Core, job: NewJob, token: str, mark: str) -> None:
    """What a racing producer leaves between its record and its confirm: no message yet."""
    fields = {
        "id": job.job_id,
        "type": job.job_type.name,
        "queue": job.job_type.queue,
        "state": "queued",
        "attempts": 0,
        "created_at": utcnow(),
    }
    (outcome,) = core.app.jobstore.create_many([NewRecord(fields, token, mark)])
    assert outcome.state == "created"


def run_once_and_check(core: Core, job_id: str) -> None:
    """The one message runs once: one attempt, one effect."""
    assert ready_messages(core.broker, "diagnostics") == 1
    worker = core.platform.start_worker(f"core-{job_id[:6]}", queues=["diagnostics"])
    try:
        wait_until(
            lambda: (core.app.jobstore.get(job_id) or {}).get("state") == "succeeded",
            30,
            what="the job to succeed",
        )
    finally:
        worker.stop()
    record = core.app.jobstore.get(job_id)
    assert record["attempts"] == 1, record
    assert core.app.jobstore.redis.hget(EFFECTS_KEY, job_id) == b"1"
    assert ready_messages(core.broker, "diagnostics") == 0


def test_the_same_id_from_eight_threads_is_one_job_one_message_one_run(core: Core):
    job_id = str(uuid.uuid4())
    barrier = threading.Barrier(8)
    results: list[Submitted] = []

    def producer() -> None:
        barrier.wait()
        results.append(submit_once(core.app, job_id))

    threads = [threading.Thread(target=producer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert sum(r.created for r in results) == 1, [r.created for r in results]
    assert {r.record["id"] for r in results} == {job_id}
    assert all("token" not in r.record and "publishing" not in r.record for r in results)
    run_once_and_check(core, job_id)


def test_the_same_id_from_four_processes_is_one_job_one_message_one_run(core: Core):
    job_id = str(uuid.uuid4())
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start = time.time() + 8  # spawned interpreters need a few seconds to import Celery
    producers = [
        context.Process(
            target=_submit_in_process, args=(core.broker, core.backend, job_id, start, out)
        )
        for _ in range(4)
    ]
    for process in producers:
        process.start()
    results = [out.get(timeout=60) for _ in producers]
    for process in producers:
        process.join(30)
        assert process.exitcode == 0
    assert sorted(created for created, _ in results) == [False, False, False, True], results
    assert {record_id for _, record_id in results} == {job_id}
    run_once_and_check(core, job_id)


def test_a_second_submit_of_a_finished_id_returns_it_and_publishes_nothing(core: Core):
    job_id = str(uuid.uuid4())
    assert submit_once(core.app, job_id).created
    run_once_and_check(core, job_id)
    again = submit_once(core.app, job_id)
    assert not again.created
    assert again.record["state"] == "succeeded"
    assert ready_messages(core.broker, "diagnostics") == 0


def test_a_producer_that_died_before_its_confirm_is_taken_over(core: Core):
    """Its record exists with a publishing mark whose deadline passed, and no message:
    the next producer of that id publishes it, once."""
    job_id = str(uuid.uuid4())
    job = check(core.app, SLEEP_ONCE, job_id=job_id)
    dead_mark = f"{uuid.uuid4().hex}:{int((time.time() - 1) * 1000)}"
    record_unconfirmed(core, job, "dead-producer", dead_mark)
    assert ready_messages(core.broker, "diagnostics") == 0
    (submitted,) = submit(core.app, [NewJob(job.job_type, job.payload, job_id=job_id)])
    assert submitted.record["id"] == job_id
    assert core.app.jobstore.publishing_mark(job_id) is None
    run_once_and_check(core, job_id)


def test_a_producer_that_gave_up_leaves_the_id_to_the_next_one(core: Core):
    """A racing producer's record is there, unconfirmed; it then fails and removes it.
    The waiting producer creates the job after all, and publishes it once."""
    job_id = str(uuid.uuid4())
    job = check(core.app, SLEEP_ONCE, job_id=job_id)
    token = uuid.uuid4().hex
    live_mark = f"{token}:{int((time.time() + 30) * 1000)}"
    record_unconfirmed(core, job, token, live_mark)
    gives_up = threading.Timer(0.5, core.app.jobstore.forget, args=([job_id], [token]))
    gives_up.start()
    started = time.monotonic()
    (submitted,) = submit(core.app, [NewJob(job.job_type, job.payload, job_id=job_id)])
    gives_up.join()
    assert time.monotonic() - started >= 0.4, "it did not wait for the racing producer"
    assert submitted.created and submitted.record["id"] == job_id
    run_once_and_check(core, job_id)


def test_publishes_share_pooled_lanes_rather_than_one_per_thread(core: Core, monkeypatch):
    """Connections follow concurrent publishes, not threads: the web's wait slots add
    threads that must not each keep a broker connection (tasks/core/publisher.py)."""
    from tasks.core import publisher as publisher_module

    publisher = core.app.publisher
    for _ in range(12):  # one after another, each from a new thread
        thread = threading.Thread(target=submit_once, args=(core.app, str(uuid.uuid4())))
        thread.start()
        thread.join(30)
    assert len(publisher._idle) == 1, "sequential publishes from many threads reuse one lane"
    barrier = threading.Barrier(6)

    def together() -> None:
        barrier.wait(10)
        submit_once(core.app, str(uuid.uuid4()))

    threads = [threading.Thread(target=together) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert 1 <= len(publisher._idle) <= 6
    # Lanes left idle past LANE_IDLE_S are closed when the next one is given back.
    monkeypatch.setattr(publisher_module, "LANE_IDLE_S", 0.0)
    time.sleep(0.01)
    submit_once(core.app, str(uuid.uuid4()))
    assert len(publisher._idle) == 1
