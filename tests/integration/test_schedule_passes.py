"""One scheduler pass at a fixed "now", against real Redis and RabbitMQ.

The pass (tasks/core/schedule_fire.run_pass) is what a leading beat runs each tick;
here it runs in the test process with a chosen clock, so missed-fire policies,
the catch-up bound, overlap, jitter and the watermark's compare-and-set are
checked exactly. A vhost and a Redis database of this module's own: nothing
consumes the fires, and no other module's scheduler sees these schedules.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tasks.core.schedule_fire import FirePolicy, PassResult, fire, reconcile, run_pass
from tasks.core.schedule_times import fire_job_id, jittered
from tasks.core.schedules import ScheduleStore, check_schedule
from tasks.factory import TaskplaneCelery, create_celery_app
from tasks.scheduler.lease import Lease
from tests.services import RabbitMQ, RedisServer

pytestmark = pytest.mark.integration
POLICY = FirePolicy(grace_s=2.0, catch_up_limit=100)


@pytest.fixture(scope="module")
def app() -> Iterator[TaskplaneCelery]:
    rabbit, redis_server = RabbitMQ(), RedisServer()
    vhost = f"taskplane-passes-{uuid.uuid4().hex[:8]}"
    broker = rabbit.create_vhost(vhost)
    _, backend = redis_server.claim_database(owner="schedule-passes")
    app = create_celery_app(
        "testing",
        overrides={"broker_url": broker, "result_backend": backend},
        patient_storage=False,
    )
    try:
        yield app
    finally:
        redis_server.release_database(backend)
        rabbit.delete_vhost(vhost)


@pytest.fixture()
def store(app: TaskplaneCelery) -> ScheduleStore:
    return app.schedules


def second(offset_s: float = 0) -> datetime:
    """A whole second in the past plus ``offset_s``: fixed clocks for a pass."""
    return datetime.fromtimestamp(int(time.time()) - 120, UTC) + timedelta(seconds=offset_s)


def make(app: TaskplaneCelery, store: ScheduleStore, since: datetime, **fields) -> str:  # noqa: ANN003
    schedule_id = f"s-{uuid.uuid4().hex[:10]}"
    body = {"id": schedule_id, "type": "diagnostics.echo", "interval_s": 1, **fields}
    schedule, enabled = check_schedule(app, body)
    assert store.create(schedule, enabled=enabled, at_ms=int(since.timestamp() * 1000))
    return schedule_id


def dues(since: datetime, now: datetime) -> list[datetime]:
    first = int(since.timestamp()) + 1
    return [datetime.fromtimestamp(s, UTC) for s in range(first, int(now.timestamp()) + 1)]


def exists(app: TaskplaneCelery, schedule_id: str, due: datetime) -> bool:
    return app.jobstore.get(fire_job_id(schedule_id, due)) is not None


@pytest.mark.parametrize("policy", ["all", "last", "none"])
def test_missed_fires_follow_the_policy_and_fresh_ones_always_fire(
    app: TaskplaneCelery, store: ScheduleStore, policy: str
) -> None:
    since, now = second(), second(30.5)
    schedule_id = make(app, store, since, missed=policy)
    result = run_pass(app, store, store.get(schedule_id), now, POLICY)

    due = dues(since, now)
    assert len(due) == 30
    fresh = [d for d in due if d > now - timedelta(seconds=2)]
    late = [d for d in due if d not in fresh]
    expected = {"all": late + fresh, "last": late[-1:] + fresh, "none": fresh}[policy]
    assert {d for d in due if exists(app, schedule_id, d)} == set(expected)
    assert result == PassResult(fired=len(expected), missed=30 - len(expected))
    stored = store.get(schedule_id)
    assert stored.counts == {"fired": len(expected), "skipped": 0, "missed": 30 - len(expected)}
    assert stored.watermark == due[-1]
    assert [f["due_at"][:19] for f in store.fires(schedule_id)][0] == due[-1].isoformat()[:19]
    # A second pass at the same time finds nothing left to do.
    assert run_pass(app, store, store.get(schedule_id), now, POLICY) == PassResult()


def test_catch_up_is_bounded_and_keeps_the_newest(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    since, now = second(-100), second(0.2)
    schedule_id = make(app, store, since, missed="all")
    run_pass(app, store, store.get(schedule_id), now, FirePolicy(grace_s=2, catch_up_limit=5))
    due = dues(since, now)
    fired = [d for d in due if exists(app, schedule_id, d)]
    assert fired == due[-7:]  # the 5 newest missed ones, and the 2 within the grace
    assert store.get(schedule_id).counts["missed"] == len(due) - 7


def test_two_schedulers_passing_at_once_create_and_count_each_fire_once(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    since, now = second(), second(20.5)
    schedule_id = make(app, store, since, missed="all")
    snapshot = store.get(schedule_id)
    barrier = threading.Barrier(3)
    results: list[PassResult] = []

    def scheduler() -> None:
        barrier.wait()
        results.append(run_pass(app, store, snapshot, now, POLICY))

    threads = [threading.Thread(target=scheduler) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    due = dues(since, now)
    assert all(exists(app, schedule_id, d) for d in due)
    stored = store.get(schedule_id)
    assert stored.counts == {"fired": len(due), "skipped": 0, "missed": 0}
    assert sum(r.fired for r in results) == len(due)  # each recorded by one of them
    fires = store.fires(schedule_id, limit=100)
    assert len(fires) == len({f["due_at"] for f in fires}) == len(due)


def test_overlap_skip_waits_for_the_previous_fire_to_finish(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    since = second()
    schedule_id = make(app, store, since, overlap="skip")
    assert run_pass(app, store, store.get(schedule_id), second(1.1), POLICY).fired == 1
    first = fire_job_id(schedule_id, second(1))
    app.jobstore.redis.hset(app.jobstore.key(first), "state", "started")
    assert run_pass(app, store, store.get(schedule_id), second(3.1), POLICY) == PassResult(
        skipped=2
    )
    assert not exists(app, schedule_id, second(2))
    states = [f["outcome"] for f in store.fires(schedule_id)]
    assert states == ["skipped", "skipped", "fired"]
    app.jobstore.redis.hset(app.jobstore.key(first), "state", "succeeded")
    assert run_pass(app, store, store.get(schedule_id), second(4.1), POLICY).fired == 1
    assert store.get(schedule_id).last_job == fire_job_id(schedule_id, second(4))


def test_jitter_delays_the_run_the_same_way_on_every_scheduler(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    now = datetime.now(UTC)
    since = now.replace(microsecond=0) - timedelta(seconds=1)
    due = since + timedelta(seconds=1)
    # A fire whose jittered time is at most a second away runs at once (queued, not
    # scheduled): with a random id that is about one run in thirty, so take an id
    # whose jitter for this due time is at least 5 s.
    schedule_id = next(
        candidate
        for candidate in (f"s-{uuid.uuid4().hex[:10]}" for _ in range(1000))
        if jittered(due, 60, candidate) - due >= timedelta(seconds=5)
    )
    make(app, store, since, jitter_s=60, id=schedule_id)
    run_pass(app, store, store.get(schedule_id), since + timedelta(seconds=1.01), POLICY)
    record = app.jobstore.get(fire_job_id(schedule_id, due))
    assert record["state"] == "scheduled", record
    run_at = datetime.fromisoformat(record["scheduled_for"].replace("Z", "+00:00"))
    assert since < run_at <= since + timedelta(seconds=62)


def test_a_payload_that_stopped_validating_disables_the_schedule(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    since = second()
    schedule_id = make(app, store, since, type="diagnostics.sleep", payload={"seconds": 1})
    key = store.key(schedule_id)
    spec = app.jobstore.redis.hget(key, "spec").decode().replace('"seconds": 1', '"seconds": 9999')
    app.jobstore.redis.hset(key, "spec", spec)  # as if the job type's schema had tightened
    result = run_pass(app, store, store.get(schedule_id), second(3.5), POLICY)
    assert result.disabled and result.fired == 0
    stored = store.get(schedule_id)
    assert not stored.enabled
    assert "payload.seconds" in stored.disabled_reason
    assert not exists(app, schedule_id, second(1))


def test_declared_schedules_are_created_changed_and_removed_never_doubled(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    made_over_http = make(app, store, second())
    declared = [{"id": "nightly", "type": "diagnostics.echo", "cron": "0 3 * * *"}]
    assert reconcile(app, store, declared).created == ["nightly"]
    assert reconcile(app, store, declared).kept == ["nightly"]
    store.set_enabled("nightly", False)  # paused over HTTP: survives an unchanged declaration
    reconcile(app, store, declared)
    assert not store.get("nightly").enabled
    declared[0]["cron"] = "0 4 * * *"
    assert reconcile(app, store, declared).updated == ["nightly"]
    stored = store.get("nightly")
    assert stored.schedule.cadence.cron == "0 4 * * *" and stored.enabled
    assert stored.origin == "config"
    assert store.ids().count("nightly") == 1
    assert reconcile(app, store, []).removed == ["nightly"]
    assert store.get("nightly") is None
    assert store.get(made_over_http) is not None  # made over HTTP: not config's to remove


def test_the_lease_has_one_holder_and_passes_on_release_or_expiry(app: TaskplaneCelery) -> None:
    client = app.jobstore.redis
    client.delete("taskplane:scheduler:lease")
    first, second_ = (Lease(client, name, ttl_s=0.6, renew_s=0.2) for name in ("a", "b"))
    assert first.hold() and first.held()
    assert not second_.hold()
    assert first.hold()  # renewing
    first.release()
    assert second_.hold() and not first.hold()
    time.sleep(0.8)  # b stops renewing (as if killed): its lease expires
    assert not second_.held()
    assert first.hold()
    assert client.hget("taskplane:scheduler:leader", "holder") == b"a"


def test_a_fire_created_but_not_recorded_counts_as_fired_not_missed(
    app: TaskplaneCelery, store: ScheduleStore
) -> None:
    """A pass fired the oldest due time, then lost Redis before recording it."""
    since, now = second(), second(10.5)
    schedule_id = make(app, store, since, missed="none")
    fire(app, store.get(schedule_id).schedule, second(1))  # its job exists, unrecorded
    result = run_pass(app, store, store.get(schedule_id), now, POLICY)
    fresh = [d for d in dues(since, now) if d > now - timedelta(seconds=2)]
    assert result == PassResult(fired=1 + len(fresh), missed=10 - 1 - len(fresh))
    assert store.get(schedule_id).counts["fired"] == 1 + len(fresh)
    assert exists(app, schedule_id, second(1)) and not exists(app, schedule_id, second(2))
