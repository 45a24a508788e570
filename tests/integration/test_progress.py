"""Progress a handler reports (``context.progress``), on the real Redis and a real worker.

Through HTTP: a running job shows how far it got, and the finished job its last
report. Against the store: reports are throttled per job, only the running
attempt that holds the job may write one, and a new attempt starts without the
old one's.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tasks.core.jobstore import JobStore, redis_client
from tasks.runtime.effects import PROGRESS_INTERVAL_S, JobContext
from tests.integration.helpers import follow, submit

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(session_redis_url: str) -> JobStore:
    return JobStore(redis_client(session_redis_url, patient=False), finished_ttl_s=60)


def started_job(store: JobStore) -> tuple[str, int]:
    """A fresh job record moved to ``started`` as a worker moves it: (id, attempt)."""
    job_id = str(uuid.uuid4())
    store.create(job_id, "diagnostics.sleep", "diagnostics")
    outcome = store.start(job_id, "diagnostics.sleep", "diagnostics", "test@host", recorded=True)
    assert outcome.proceed, outcome
    return job_id, outcome.attempt


def test_a_running_job_shows_its_progress_and_the_finished_job_its_last(api):
    job = submit(api, "diagnostics.sleep", {"seconds": 2.0, "steps": 20})
    seen: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = api.get(f"/jobs/{job['id']}").json()
        if current["state"] == "started" and current.get("progress"):
            seen.append(current["progress"])
        if current["state"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    midway = [p for p in seen if 0 < p["done"] < 20]
    assert midway, f"no progress seen while the job ran: {seen}"
    assert all(p["total"] == 20 and p["updated_at"] for p in midway)
    assert done["progress"]["done"] == 20
    assert done["progress"]["total"] == 20
    assert done["progress"]["message"] == "step 20 of 20"


def test_reports_in_a_tight_loop_are_throttled_and_the_last_is_kept(store):
    job_id, attempt = started_job(store)
    context = JobContext(job_id=job_id, attempt=attempt, settings=None, store=store)
    started = time.monotonic()
    written = sum(context.progress(done, 5000) for done in range(5001))
    elapsed = time.monotonic() - started
    # The first report, one per interval after it, and the last (done == total).
    assert 2 <= written <= elapsed / PROGRESS_INTERVAL_S + 2, (written, elapsed)
    assert store.get(job_id)["progress"]["done"] == 5000


def test_only_the_attempt_that_holds_the_job_writes_progress(store):
    job_id, attempt = started_job(store)
    stale = JobContext(job_id=job_id, attempt=attempt + 1, settings=None, store=store)
    assert stale.progress(1, 10) is False
    assert "progress" not in store.get(job_id)
    holder = JobContext(job_id=job_id, attempt=attempt, settings=None, store=store)
    assert holder.progress(2, 10) is True
    store.succeeded(job_id, {"ok": True})
    assert holder.progress(9, 10) is False, "a finished job took a progress report"
    assert store.get(job_id)["progress"]["done"] == 2


def test_a_new_attempt_starts_without_the_previous_attempts_progress(store):
    job_id, attempt = started_job(store)
    assert JobContext(job_id=job_id, attempt=attempt, settings=None, store=store).progress(3, 10)
    store.retrying(job_id, {"type": "transient", "message": "again"}, "2026-01-01T00:00:00Z")
    again = store.start(job_id, "diagnostics.sleep", "diagnostics", "test@host", recorded=True)
    assert again.proceed and again.attempt == attempt + 1
    assert "progress" not in store.get(job_id)


@pytest.mark.parametrize(
    ("done", "total"), [(-1, None), (1.5, None), (True, None), (5, 4), (1, -1), (1, "9")]
)
def test_a_report_that_makes_no_sense_is_refused(done, total):
    context = JobContext(job_id="x", attempt=1, settings=None, store=None)
    with pytest.raises(ValueError):
        context.progress(done, total)
