"""POST /jobs/batch: all validated first, all confirmed before 202."""

import uuid
from datetime import datetime, timedelta

import pytest

from tests.integration.helpers import assert_error, follow

pytestmark = pytest.mark.integration


def test_a_batch_is_accepted_whole_and_every_job_runs(api):
    items = [{"type": "diagnostics.echo", "payload": {"data": n}} for n in range(300)]
    items.append({"type": "logs.summarize", "payload": {"lines": ["2024-01-01 ERROR x"]}})
    response = api.post("/jobs/batch", json={"jobs": items})
    assert response.status_code == 202, response.text
    jobs = response.json()["jobs"]
    assert len(jobs) == 301 and len({j["id"] for j in jobs}) == 301
    assert all(j["state"] == "queued" and j["location"] == f"/jobs/{j['id']}" for j in jobs)
    results = [follow(api, j["id"], timeout=120)[0] for j in jobs]
    assert all(r["state"] == "succeeded" for r in results)
    assert [r["result"]["data"] for r in results[:300]] == list(range(300))
    assert results[300]["result"]["levels"] == {"ERROR": 1}


def test_one_bad_item_rejects_the_batch_naming_each_failing_index(api):
    items = [
        {"type": "diagnostics.echo", "payload": {}},
        {"type": "nope.nothing", "payload": {}},
        {"type": "diagnostics.echo", "payload": {}},
        {"type": "webhook.deliver", "payload": {"url": "ftp://x"}},
    ]
    error = assert_error(api.post("/jobs/batch", json={"jobs": items}), 422, "validation_failed")
    assert {d["index"] for d in error["details"]} == {1, 3}
    assert {"payload.url", "payload.body"} <= {
        d["path"] for d in error["details"] if d["index"] == 3
    }


@pytest.mark.parametrize(
    "body",
    [
        {"jobs": []},
        {"jobs": "x"},
        {},
        {"jobs": [{"type": "diagnostics.echo"}] * 1001},
        {"jobs": [{"type": "diagnostics.echo"}], "extra": 1},
    ],
)
def test_batch_shape_errors_are_422(api, body):
    assert_error(api.post("/jobs/batch", json=body), 422, "validation_failed")


def test_a_batch_may_schedule_items_and_runs_each_when_due(api):
    items = [
        {"type": "diagnostics.echo", "payload": {"data": "now"}},
        {"type": "diagnostics.echo", "payload": {"data": "later"}, "delay_s": 2},
    ]
    response = api.post("/jobs/batch", json={"jobs": items})
    assert response.status_code == 202, response.text
    now, later = response.json()["jobs"]
    assert now["state"] == "queued" and later["state"] == "scheduled", (now, later)
    done_now, _ = follow(api, now["id"])
    done_later, _ = follow(api, later["id"])
    assert done_now["result"] == {"data": "now"} and done_later["result"] == {"data": "later"}
    waited = datetime.fromisoformat(done_later["started_at"]) - datetime.fromisoformat(
        later["created_at"]
    )
    assert waited >= timedelta(seconds=1.5), (later, done_later)


def test_an_idempotency_key_covers_the_whole_batch(api):
    key = f"batch-{uuid.uuid4()}"
    body = {"jobs": [{"type": "diagnostics.echo", "payload": {"data": n}} for n in range(3)]}
    first = api.post("/jobs/batch", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    again = api.post("/jobs/batch", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    ids = [job["id"] for job in first.json()["jobs"]]
    assert [job["id"] for job in again.json()["jobs"]] == ids
    for job_id in ids:
        assert follow(api, job_id)[0]["state"] == "succeeded"
    other = {"jobs": body["jobs"][:2]}
    assert_error(
        api.post("/jobs/batch", json=other, headers={"Idempotency-Key": key}),
        409,
        "idempotency_key_reused",
    )
