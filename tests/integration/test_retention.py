"""Retention on the real Redis: finished records and their index entries go together.

The sweep (tasks/runtime/retention.py) runs in every worker every 10 s; here
it is called with a clock moved forward, on records the store finished.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tasks.core.jobstore import JobStore, NewRecord, index_key, redis_client, utcnow
from tasks.runtime.retention import sweep_due
from tests.services import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store() -> Iterator[JobStore]:
    """A database of its own: a sweep with the clock moved forward would delete the
    finished records other tests still read in the session's database."""
    server = RedisServer()
    _, url = server.claim_database(owner=f"pytest-retention-{os.getpid()}")
    try:
        yield JobStore(redis_client(url, patient=False), finished_ttl_s=3600)
    finally:
        server.release_database(url)


def new_job(store: JobStore, tag: str, retention_s: int | None = None) -> str:
    job_id = str(uuid.uuid4())
    fields = {
        "id": job_id,
        "type": "diagnostics.echo",
        "queue": "diagnostics",
        "state": "queued",
        "attempts": 0,
        "created_at": utcnow(),
        "tags": {"run": tag},
    }
    if retention_s is not None:
        fields["retention_s"] = retention_s
    (outcome,) = store.create_many([NewRecord(fields)])
    assert outcome.state == "created"
    return job_id


def indexed(store: JobStore, job_id: str, tag: str) -> set[str]:
    keys = [
        index_key("all"),
        index_key("type", "diagnostics.echo"),
        index_key("queue", "diagnostics"),
        index_key("tag", f"run={tag}"),
        *(index_key("state", s) for s in ("queued", "started", "succeeded", "failed", "cancelled")),
    ]
    return {key for key in keys if store.redis.zscore(key, job_id) is not None}


def test_finished_records_and_their_index_entries_go_together_after_their_retention(store):
    tag = uuid.uuid4().hex
    short = new_job(store, tag, retention_s=60)
    default = new_job(store, tag)
    for job_id in (short, default):
        assert store.start(job_id, "diagnostics.echo", "diagnostics", "w", recorded=True).proceed
        assert store.succeeded(job_id, {"ok": True}) == "ok"
    assert len(indexed(store, short, tag)) == 5
    ttl = store.redis.ttl(store.key(short))
    assert 60 < ttl <= 60 + 86400, "the record's own TTL backs the sweep up, a day later"

    sweep_due(store, now=time.time() + 120)
    assert store.get(short) is None
    assert indexed(store, short, tag) == set()
    assert store.get(default) is not None, "a record within its retention stays"
    assert len(indexed(store, default, tag)) == 5

    sweep_due(store, now=time.time() + 3600 + 5)
    assert store.get(default) is None
    assert indexed(store, default, tag) == set()


def test_a_dead_lettered_job_stays_until_replayed_and_then_follows_retention(store):
    tag = uuid.uuid4().hex
    job_id = new_job(store, tag, retention_s=60)
    store.start(job_id, "diagnostics.echo", "diagnostics", "w", recorded=True)
    store.failed(job_id, {"type": "x", "message": "boom"})
    store.dead_lettered(job_id, "diagnostics.echo", "diagnostics", "rejected", {"message": "x"})
    assert store.redis.ttl(store.key(job_id)) == -1, "a dead-lettered record does not expire"
    sweep_due(store, now=time.time() + 10**6)
    assert store.get(job_id)["state"] == "failed"
    assert store.reset_for_replay(job_id, "diagnostics") == "queued"
    assert store.get(job_id)["state"] == "queued"
    assert index_key("state", "queued") in indexed(store, job_id, tag)
    store.start(job_id, "diagnostics.echo", "diagnostics", "w", recorded=True)
    store.succeeded(job_id, None)
    sweep_due(store, now=time.time() + 120)
    assert store.get(job_id) is None
    assert indexed(store, job_id, tag) == set()


def test_a_cancelled_job_is_swept_too(store):
    tag = uuid.uuid4().hex
    job_id = new_job(store, tag, retention_s=60)
    assert store.cancel(job_id) == "cancelled"
    assert index_key("state", "cancelled") in indexed(store, job_id, tag)
    sweep_due(store, now=time.time() + 120)
    assert store.get(job_id) is None and indexed(store, job_id, tag) == set()
