"""Claims on side effects, against a real Redis and a real worker.

A run claims its effect before acting. The claim must outlast a slow effect
(its performer extends it) and lapse soon after a performer died, and a run
that meets someone else's claim waits for it without spending the job's
attempts (max_attempts is 3 for diagnostics.sleep).
"""

import threading
import time
import uuid

import pytest

from tasks.core.errors import EffectInProgress
from tasks.core.jobstore import JobStore, effect_key, redis_client
from tasks.runtime.effects import JobContext
from tests.integration.helpers import FINAL, follow

EFFECTS_KEY = "taskplane:diagnostics:effects"


@pytest.fixture()
def store(session_redis_url: str) -> JobStore:
    return JobStore(redis_client(session_redis_url, patient=True), finished_ttl_s=60)


def context(store: JobStore, job_id: str, attempt: int, lease_s: float) -> JobContext:
    return JobContext(job_id=job_id, attempt=attempt, settings=None, store=store, lease_s=lease_s)


def test_the_performing_run_extends_its_claim_past_the_lease(store):
    job_id = uuid.uuid4().hex
    performed = []

    def slow_effect():
        time.sleep(5)  # two and a half leases
        performed.append(1)
        return {"delivered": True}

    first = threading.Thread(target=lambda: context(store, job_id, 1, 2).once("x", slow_effect))
    first.start()
    time.sleep(4)
    with pytest.raises(EffectInProgress) as waiting:
        context(store, job_id, 2, 2).once("x", slow_effect)
    assert 0 < waiting.value.retry_after <= 2
    first.join(10)

    later = context(store, job_id, 3, 2).once("x", slow_effect)
    assert later == {"delivered": True}
    assert performed == [1]


def test_a_claim_nobody_extends_lapses_within_its_lease(store):
    job_id = uuid.uuid4().hex
    assert store.claim_effect(job_id, "x", "killed-run", 1).claimed
    held = store.claim_effect(job_id, "x", "rerun", 1)
    assert not held.claimed and held.holder == "killed-run"
    time.sleep(1.2)
    assert store.claim_effect(job_id, "x", "rerun", 1).claimed


def test_a_job_waits_for_another_runs_effect_without_spending_attempts(api, store):
    """A live run holds the effect past the job's three attempts, then gives it up."""
    job = api.post(
        "/jobs",
        json={"type": "diagnostics.sleep", "payload": {"seconds": 0, "effect": True}, "delay_s": 1},
    ).json()
    key = effect_key(job["id"], "effect")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        store.redis.set(key, "pending:slow-run", ex=2)  # the slow run extends its claim
        view = api.get(f"/jobs/{job['id']}").json()
        if view["state"] in FINAL or view["attempts"] > 3:
            break
        time.sleep(0.3)
    store.redis.delete(key)  # ... and gives it back: its effect failed

    view, _ = follow(api, job["id"], timeout=30)
    assert view["state"] == "succeeded", view
    assert view["attempts"] > 3, view
    assert store.redis.hget(EFFECTS_KEY, job["id"]) == b"1"
