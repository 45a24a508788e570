"""JobStore.create_many: a batch's records in one script call per chunk, on the real Redis.

Every case a single create has (created, an id that exists, an attempt given up
before) holds for each record of a batch, in the batch's order, across chunks.
The store runs in the session's own Redis database; every test uses fresh ids.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from tasks.core import jobstore
from tasks.core.jobstore import CREATE_CHUNK, JobStore, NewRecord, redis_client, utcnow

pytestmark = pytest.mark.integration


class CountingRedis(redis.Redis):
    """The real client, noting the name of every command it sends (pipelines aside)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)


@pytest.fixture()
def store(session_redis_url: str) -> JobStore:
    return JobStore(redis_client(session_redis_url, patient=False), finished_ttl_s=60)


def fields(job_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "diagnostics.echo",
        "queue": "diagnostics",
        "state": "queued",
        "attempts": 0,
        "created_at": utcnow(),
        **extra,
    }


def fresh_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def test_new_records_are_all_created_and_stored_as_given(store: JobStore):
    ids = fresh_ids(5)
    records = [NewRecord(fields(i, tags={"n": str(n)})) for n, i in enumerate(ids)]
    outcomes = store.create_many(records)
    assert [o.state for o in outcomes] == ["created"] * 5
    assert all(o.existing is None for o in outcomes)
    for n, job_id in enumerate(ids):
        assert store.get(job_id) == records[n].fields  # tags back as JSON, attempts as int


def test_deterministic_ids_keep_their_token_and_publishing_mark(store: JobStore):
    (job_id,) = fresh_ids(1)
    (outcome,) = store.create_many([NewRecord(fields(job_id), "tok", "tok:123")])
    assert outcome.state == "created"
    record = store.get(job_id)
    assert record["token"] == "tok" and record["publishing"] == "tok:123"


def test_existing_ids_keep_their_records_and_come_back_with_them(store: JobStore):
    old, new = fresh_ids(2), fresh_ids(3)
    store.create_many([NewRecord(fields(i, state="started"), "first", "first:1") for i in old])
    batch = [new[0], old[0], new[1], old[1], new[2]]
    outcomes = store.create_many([NewRecord(fields(i), "second", "second:2") for i in batch])
    assert [o.state for o in outcomes] == ["created", "exists", "created", "exists", "created"]
    for outcome, job_id in ((outcomes[1], old[0]), (outcomes[3], old[1])):
        assert outcome.existing == store.get(job_id)
        assert outcome.existing["state"] == "started" and outcome.existing["attempts"] == 0
        assert outcome.existing["token"] == "first" and outcome.existing["publishing"] == "first:1"
    assert all(store.get(i)["token"] == "second" for i in new)


def test_an_id_given_twice_in_one_batch_is_created_once(store: JobStore):
    (job_id,) = fresh_ids(1)
    outcomes = store.create_many([NewRecord(fields(job_id, state=s)) for s in ("queued", "x")])
    assert [o.state for o in outcomes] == ["created", "exists"]
    assert outcomes[1].existing["state"] == "queued" == store.get(job_id)["state"]


def test_an_attempt_given_up_before_is_refused_and_writes_nothing(store: JobStore):
    fresh, kept, given_up = fresh_ids(3)
    store.create_many([NewRecord(fields(kept), "t1", "t1:1"), NewRecord(fields(given_up))])
    # The web gave up on two attempts: a fresh id's (token "") and a deterministic one's.
    store.forget([fresh, given_up, kept], ["", "", "t1"])
    outcomes = store.create_many(
        [
            NewRecord(fields(fresh)),
            NewRecord(fields(kept), "t1", "t1:2"),
            NewRecord(fields(given_up)),
        ]
    )
    assert [o.state for o in outcomes] == ["refused"] * 3
    assert all(o.existing is None for o in outcomes)
    assert store.get_many([fresh, kept, given_up]) == [None, None, None]


def test_another_attempt_at_a_tombstoned_id_is_created(store: JobStore):
    """A tombstone holds the tokens given up on, not the id: a later producer may create it."""
    (job_id,) = fresh_ids(1)
    store.create_many([NewRecord(fields(job_id), "t1", "t1:1")])
    store.forget([job_id], ["t1"])
    (outcome,) = store.create_many([NewRecord(fields(job_id), "t2", "t2:1")])
    assert outcome.state == "created" and store.get(job_id)["token"] == "t2"


def test_a_tombstone_of_another_attempt_leaves_the_record_existing(store: JobStore):
    (job_id,) = fresh_ids(1)
    store.create_many([NewRecord(fields(job_id), "t1", "t1:1")])
    store.forget([job_id], ["t2"])  # someone else's attempt: the record is not theirs
    (outcome,) = store.create_many([NewRecord(fields(job_id), "t3", "t3:1")])
    assert outcome.state == "exists" and outcome.existing["token"] == "t1"


def test_a_batch_over_the_chunk_size_keeps_its_order_across_calls(session_redis_url: str):
    client = CountingRedis.from_url(session_redis_url)
    store = JobStore(client, finished_ttl_s=60)
    ids = fresh_ids(2 * CREATE_CHUNK + 1)
    # Ids that exist, and a refused attempt, on both sides of each chunk boundary.
    existing = [ids[CREATE_CHUNK - 1], ids[CREATE_CHUNK], ids[2 * CREATE_CHUNK]]
    store.create_many([NewRecord(fields(i, state="started")) for i in existing])
    refused = [ids[0], ids[CREATE_CHUNK + 1]]
    store.forget(refused)
    client.sent.clear()
    outcomes = store.create_many([NewRecord(fields(i)) for i in ids])
    assert len(outcomes) == len(ids)
    want = ["exists" if i in existing else "refused" if i in refused else "created" for i in ids]
    assert [o.state for o in outcomes] == want
    assert [o.existing["id"] for o in outcomes if o.existing] == existing
    assert client.sent == ["EVALSHA"] * 3  # one per chunk, no SCRIPT EXISTS
    records = store.get_many(ids)
    assert [r["state"] if r else None for r in records] == [
        "started" if i in existing else None if i in refused else "queued" for i in ids
    ]


def test_small_chunks_give_the_same_outcomes(store: JobStore, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(jobstore, "CREATE_CHUNK", 2)
    ids = fresh_ids(5)
    store.create_many([NewRecord(fields(ids[1]))])
    outcomes = store.create_many([NewRecord(fields(i)) for i in [*ids, ids[4]]])
    assert [o.state for o in outcomes] == [
        "created",
        "exists",
        "created",
        "created",
        "created",
        "exists",
    ]


def test_a_redis_without_the_script_gets_it_loaded_once(session_redis_url: str):
    """EVALSHA first; on NOSCRIPT (a restarted or another Redis) the client loads it and retries."""
    client = CountingRedis.from_url(session_redis_url)
    store = JobStore(client, finished_ttl_s=60)
    store._create.sha = "0" * 40  # noqa: SLF001 - a digest this Redis has never seen
    outcomes = store.create_many([NewRecord(fields(i)) for i in fresh_ids(3)])
    assert [o.state for o in outcomes] == ["created"] * 3
    assert client.sent == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]


def test_an_empty_batch_sends_nothing(session_redis_url: str):
    client = CountingRedis.from_url(session_redis_url)
    assert JobStore(client, finished_ttl_s=60).create_many([]) == []
    assert client.sent == []


def test_create_still_raises_for_an_id_that_exists(store: JobStore):
    (job_id,) = fresh_ids(1)
    store.create(job_id, "diagnostics.echo", "diagnostics")
    with pytest.raises(jobstore.RecordRefused):
        store.create(job_id, "diagnostics.echo", "diagnostics")
