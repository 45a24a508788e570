"""Schedules fired by real ``celery -A tasks beat`` processes: two at once, one killed.

Two schedulers run against the session's broker and Redis for the whole module, as
the README's production setup runs them (on different hosts there; here, two
processes). What a fire leaves is read from Redis directly: every due time of an
interval schedule has a job with the fire's deterministic id, no job of the
schedule exists beyond those, and the schedule's counts add up.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tasks.core.schedule_times import fire_job_id
from tests.integration.helpers import FINAL
from tests.services import Platform, wait_until

pytestmark = pytest.mark.integration

# The documented takeover bound (README "Schedules"): lease 10 s + one renewal of 1 s.
TAKEOVER_BOUND_S = 12
SCHEDULES = "taskplane:schedules"
LEADER = "taskplane:scheduler:leader"


@pytest.fixture(scope="module")
def store(session_redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(session_redis_url, decode_responses=True)
    for schedule_id in client.zrange(SCHEDULES, 0, -1):  # other modules' leftovers
        client.delete(
            f"taskplane:schedule:{schedule_id}", f"taskplane:schedule-fires:{schedule_id}"
        )
    client.delete(SCHEDULES)
    return client


@pytest.fixture(scope="module")
def beats(platform: Platform, worker, store: redis.Redis):  # noqa: ANN001, ANN201
    first, second = platform.start_beat("beat-a"), platform.start_beat("beat-b")
    wait_until(lambda: store.hget(LEADER, "holder"), 15, what="a scheduler to lead")
    yield [first, second]
    for process in (first, second):
        process.stop()


def create(api: httpx.Client, **schedule: Any) -> dict[str, Any]:
    body = {"type": "diagnostics.echo", "payload": {}, "interval_s": 1, **schedule}
    response = api.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def stored(store: redis.Redis, schedule_id: str) -> dict[str, str]:
    return store.hgetall(f"taskplane:schedule:{schedule_id}")


def whole_seconds(after_ms: int, until_ms: int) -> list[datetime]:
    """The due times of an interval of 1 s in (after, until]."""
    first = after_ms // 1000 + 1
    return [datetime.fromtimestamp(s, UTC) for s in range(first, until_ms // 1000 + 1)]


def jobs_of(store: redis.Redis, schedule_id: str) -> dict[str, dict[str, str]]:
    """Every job record in Redis tagged with the schedule, by id."""
    found = {}
    for key in store.scan_iter("taskplane:job:*", count=1000):
        record = store.hgetall(key)
        tags = json.loads(record.get("tags") or "{}")
        if tags.get("schedule") == schedule_id:
            found[record["id"]] = record
    return found


def dues_and_jobs(store: redis.Redis, schedule_id: str) -> tuple[list[datetime], dict, dict]:
    """(every due time so far, the schedule's hash, its jobs)."""
    state = stored(store, schedule_id)
    created_ms = int(datetime.fromisoformat(state["created_at"]).timestamp() * 1000)
    return whole_seconds(created_ms, int(state["watermark"])), state, jobs_of(store, schedule_id)


def test_two_schedulers_fire_every_due_time_once_for_a_minute(
    api: httpx.Client, beats: list, store: redis.Redis
) -> None:
    create(api, id="every-second", missed="all")
    create(api, id="paused", enabled=False)
    create(
        api, id="one-at-a-time", type="diagnostics.sleep", payload={"seconds": 5}, overlap="skip"
    )
    create(api, id="changing", payload={"data": "before"})
    time.sleep(20)
    response = api.patch("/schedules/changing", json={"payload": {"data": "after"}})
    assert response.status_code == 200, response.text
    changed_at = time.time()
    time.sleep(40)

    # Every due time of the minute has its job, with the fire's id, and nothing more.
    dues, state, jobs = dues_and_jobs(store, "every-second")
    assert len(dues) >= 55, dues
    expected = {fire_job_id("every-second", due) for due in dues}
    assert expected <= set(jobs), sorted(expected - set(jobs))  # no gaps
    in_flight = set(jobs) - expected  # fired after the watermark was read
    assert len(in_flight) <= 2, in_flight  # no duplicates
    assert int(state["fired"]) == len(dues)
    assert int(state["missed"]) == int(state["skipped"]) == 0
    wait_until(
        lambda: all(store.hget(f"taskplane:job:{i}", "state") in FINAL for i in expected),
        30,
        what="the fires to run",
    )
    for job_id in expected:
        record = store.hgetall(f"taskplane:job:{job_id}")
        assert record["state"] == "succeeded" and record["attempts"] == "1", record

    # Both schedulers ran the whole time; one of them fired.
    assert all(process.alive() for process in beats)
    assert store.hget(LEADER, "holder") in {process.holder for process in beats}

    # /metrics says the same, whichever scheduler leads.
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
    }
    every = ("schedule", "every-second")
    assert samples[("taskplane_schedule_fires_total", (("outcome", "fired"), every))] >= len(dues)
    assert samples[("taskplane_schedule_fire_lag_seconds_count", (every,))] >= len(dues)
    heartbeat = samples[("taskplane_scheduler_leader_heartbeat_timestamp_seconds", ())]
    assert time.time() - heartbeat < 5

    # A paused schedule fires nothing.
    assert jobs_of(store, "paused") == {}
    assert stored(store, "paused")["fired"] == "0"

    # The change over HTTP took effect on the next fire, nothing restarted.
    dues, _, jobs = dues_and_jobs(store, "changing")
    wait_until(lambda: all(store.hget(f"taskplane:job:{i}", "state") in FINAL for i in jobs), 30)
    results = {
        due: json.loads(store.hget(f"taskplane:job:{fire_job_id('changing', due)}", "result"))
        for due in dues
    }
    before = [due for due in dues if due.timestamp() < changed_at - 1]
    after = [due for due in dues if due.timestamp() >= changed_at + 0.5]
    assert before and after
    assert {results[due]["data"] for due in before} == {"before"}
    assert {results[due]["data"] for due in after} == {"after"}

    # Overlap "skip": no fire while the previous fire's 5 s job had not finished.
    state = stored(store, "one-at-a-time")
    runs = sorted(
        (r["started_at"], r.get("finished_at") or "9999")
        for r in jobs_of(store, "one-at-a-time").values()
        if r.get("started_at")
    )
    assert int(state["skipped"]) >= 30 and 5 <= int(state["fired"]) <= 15, state
    for (_, finished), (started, _) in zip(runs, runs[1:], strict=False):
        assert started >= finished, runs  # never two at once
    fires = api.get("/schedules/one-at-a-time").json()["last_fires"]
    assert "skipped" in {fire["state"] for fire in fires}


def leader(beats: list, store: redis.Redis):  # noqa: ANN201 - tests.services.Process
    holder = store.hget(LEADER, "holder")
    (process,) = [p for p in beats if p.holder == holder]
    return process


def test_killed_leader_is_replaced_and_missed_fires_follow_policy(
    api: httpx.Client, beats: list, store: redis.Redis, platform: Platform, tmp_path: Path
) -> None:
    for policy in ("all", "last", "none"):
        create(api, id=f"catch-{policy}", missed=policy)
    time.sleep(3)
    active = leader(beats, store)
    active.signal_group(signal.SIGKILL)
    killed_at = time.time()
    (standby,) = [p for p in beats if p is not active]
    wait_until(
        lambda: store.hget(LEADER, "holder") == standby.holder,
        TAKEOVER_BOUND_S + 5,
        0.1,
        what="the standby to take the lease",
    )
    took_over_s = float(store.hget(LEADER, "since")) - killed_at
    print(f"takeover after the kill: {took_over_s:.1f} s")
    assert took_over_s <= TAKEOVER_BOUND_S, took_over_s
    time.sleep(4)

    outcomes = {}
    for policy in ("all", "last", "none"):
        dues, state, jobs = dues_and_jobs(store, f"catch-{policy}")
        fired = {due for due in dues if fire_job_id(f"catch-{policy}", due) in jobs}
        assert len(jobs) - len(fired) <= 2, jobs  # fired after the watermark was read
        assert int(state["fired"]) == len(fired)
        assert int(state["fired"]) + int(state["missed"]) == len(dues), state
        gap = [due for due in dues if killed_at < due.timestamp() < killed_at + took_over_s - 3]
        assert len(gap) >= 4, (took_over_s, gap)
        outcomes[policy] = (fired, int(state["missed"]), gap)

    fired, missed, gap = outcomes["all"]
    assert missed == 0 and set(gap) <= fired  # every fire of the gap happened, late
    fired, missed, gap = outcomes["last"]
    assert len(set(gap) & fired) <= 1 and missed >= len(gap) - 1  # only the newest missed one
    fired, missed, gap = outcomes["none"]
    assert not set(gap) & fired and missed >= len(gap)  # none of the missed ones

    # A scheduler started in the killed one's place applies the schedules declared
    # for it in config, and stands by.
    declared = tmp_path / "schedules.json"
    yearly = {"id": "declared-yearly", "type": "diagnostics.echo", "cron": "0 0 1 1 *"}
    declared.write_text(json.dumps([yearly]))
    replacement = platform.start_beat("beat-c", env={"TASKPLANE_SCHEDULES_FILE": str(declared)})
    beats[beats.index(active)] = replacement
    time.sleep(2.5)
    assert store.hget(LEADER, "holder") == standby.holder
    assert "is the leader" not in replacement.log_path.read_text()
    shown = api.get("/schedules/declared-yearly").json()
    assert shown["origin"] == "config" and shown["cron"] == "0 0 1 1 *"
    assert api.delete("/schedules/declared-yearly").status_code == 409  # config's to change
