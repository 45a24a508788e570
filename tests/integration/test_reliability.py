"""Dead letters, replay, purge, delayed jobs and idempotency, through HTTP and the CLI."""

import json
import subprocess
import time
import uuid

import pytest

from tests.integration.helpers import assert_error, follow, submit
from tests.services import ROOT, VENV_BIN, wait_until

pytestmark = pytest.mark.integration


def dead_ids(api, queue):
    response = api.get(f"/queues/{queue}/dead?limit=500")
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


def wait_dead(api, queue, job_id, timeout=30):
    return wait_until(
        lambda: dead_ids(api, queue).get(job_id),
        timeout,
        0.2,
        what=f"job {job_id} among the dead letters of {queue}",
    )


def test_permanent_failure_is_dead_lettered_without_retry(api, http_target):
    path = "/hooks/status/410"
    job = submit(api, "webhook.deliver", {"url": f"{http_target.base}{path}", "body": {}})
    done, _ = follow(api, job["id"])
    assert done["state"] == "failed" and done["attempts"] == 1
    dead = wait_dead(api, "webhooks", job["id"])
    assert dead["type"] == "webhook.deliver"
    assert dead["reason"] == "rejected"
    assert dead["attempts"] == 1
    assert "410" in dead["error"]["message"]
    assert dead["died_at"]


def test_exhausted_retries_are_dead_lettered(api):
    job = submit(api, "diagnostics.fail", {"message": "never works"})
    done, _ = follow(api, job["id"], timeout=60)
    assert done["state"] == "failed" and done["attempts"] == 5
    assert wait_dead(api, "diagnostics", job["id"])["error"]["type"] == "transient"


def test_replay_keeps_the_id_resets_attempts_and_keeps_history(api, http_target):
    key = uuid.uuid4().hex
    url = f"{http_target.base}/hooks/sequence/{key}?codes=400,200"
    job = submit(api, "webhook.deliver", {"url": url, "body": {"k": key}})
    follow(api, job["id"])
    wait_dead(api, "webhooks", job["id"])

    response = api.post("/queues/webhooks/dead/replay", json={"ids": [job["id"]]})
    assert response.status_code == 200, response.text
    assert response.json()["replayed"] == [job["id"]]

    done, _ = follow(api, job["id"])
    assert done["id"] == job["id"]
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 1
    assert len(done["history"]) == 1
    previous = done["history"][0]
    assert previous["state"] == "failed" and previous["attempts"] == 1
    assert previous["dead_reason"] == "rejected" and "400" in previous["error"]["message"]
    assert job["id"] not in dead_ids(api, "webhooks")
    assert [r["status"] for r in http_target.requests[f"/hooks/sequence/{key}"]] == [400, 200]


def test_replay_of_unknown_ids_reports_them(api):
    missing = str(uuid.uuid4())
    response = api.post("/queues/diagnostics/dead/replay", json={"ids": [missing]})
    assert response.status_code == 200
    assert response.json() == {"queue": "diagnostics", "replayed": [], "not_found": [missing]}


def test_poison_job_stops_at_the_delivery_limit_and_others_keep_flowing(api):
    poison = submit(api, "diagnostics.crash", {})
    others = [submit(api, "diagnostics.echo", {"data": i}) for i in range(5)]
    for job in others:
        assert follow(api, job["id"], timeout=60)[0]["state"] == "succeeded"
    done, _ = follow(api, poison["id"], timeout=90)
    assert done["state"] == "failed"
    dead = wait_dead(api, "diagnostics", poison["id"])
    assert dead["reason"] == "delivery_limit"
    assert dead["error"]["type"] == "delivery_limit"
    assert dead["worker"]


def test_purge_by_id_through_the_api(api):
    jobs = [submit(api, "diagnostics.fail", {"permanent": True}) for _ in range(2)]
    for job in jobs:
        follow(api, job["id"])
        wait_dead(api, "diagnostics", job["id"])
    response = api.request("DELETE", "/queues/diagnostics/dead", json={"ids": [jobs[0]["id"]]})
    assert response.status_code == 200 and response.json()["purged"] == 1
    remaining = dead_ids(api, "diagnostics")
    assert jobs[0]["id"] not in remaining and jobs[1]["id"] in remaining


def test_dead_letter_cli_lists_replays_and_purges(api, platform):
    def flask(*args):
        result = subprocess.run(
            [str(VENV_BIN / "flask"), "--app", "wsgi", "dead", *args],
            cwd=ROOT,
            env=platform.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    job = submit(api, "diagnostics.fail", {"permanent": True})
    follow(api, job["id"])
    wait_dead(api, "diagnostics", job["id"])
    listed = flask("list", "diagnostics", "--limit", "500")
    assert job["id"] in {item["id"] for item in listed["items"]}
    assert flask("replay", "diagnostics", "--id", job["id"])["replayed"] == [job["id"]]
    follow(api, job["id"])  # fails again (permanently), back among the dead
    wait_dead(api, "diagnostics", job["id"])
    assert flask("purge", "diagnostics", "--yes")["purged"] >= 1
    assert dead_ids(api, "diagnostics") == {}


def test_dead_letters_of_an_unknown_queue_is_404(api):
    assert_error(api.get("/queues/nope/dead"), 404, "queue_not_found")
    assert_error(api.get("/queues/webhooks/dead?limit=0"), 400, "invalid_parameter")


# -- delayed jobs -----------------------------------------------------------------


def test_delayed_job_is_scheduled_then_runs(api):
    response = api.post(
        "/jobs", json={"type": "diagnostics.echo", "payload": {"data": 1}, "delay_s": 3}
    )
    assert response.status_code == 202
    job = response.json()
    assert job["state"] == "scheduled" and job["scheduled_for"]
    time.sleep(1)
    assert api.get(f"/jobs/{job['id']}").json()["state"] == "scheduled"
    done, _ = follow(api, job["id"], timeout=30)
    assert done["state"] == "succeeded"
    assert done["started_at"] >= job["scheduled_for"][:19]


def test_a_delayed_job_does_not_hold_back_immediate_ones(api):
    later = submit(api, "diagnostics.echo", {})  # warm up
    follow(api, later["id"])
    delayed = api.post(
        "/jobs", json={"type": "diagnostics.echo", "payload": {}, "delay_s": 6}
    ).json()
    started = time.monotonic()
    now = submit(api, "diagnostics.echo", {"data": "now"})
    done, _ = follow(api, now["id"], timeout=10)
    assert done["state"] == "succeeded"
    assert time.monotonic() - started < 3
    assert api.get(f"/jobs/{delayed['id']}").json()["state"] == "scheduled"


def test_run_at_and_schedule_validation(api):
    run_at = "2999-01-01T00:00:00Z"
    assert_error(
        api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}, "run_at": run_at}),
        422,
        "validation_failed",
    )
    assert_error(
        api.post(
            "/jobs",
            json={"type": "diagnostics.echo", "payload": {}, "run_at": "2030-01-01T00:00:00"},
        ),
        422,
    )
    assert_error(
        api.post(
            "/jobs",
            json={"type": "diagnostics.echo", "payload": {}, "delay_s": 1, "run_at": run_at},
        ),
        422,
    )
    past = api.post(
        "/jobs",
        json={"type": "diagnostics.echo", "payload": {}, "run_at": "2020-01-01T00:00:00+00:00"},
    )
    assert past.status_code == 202 and past.json()["state"] == "queued"


def test_a_scheduled_job_can_be_cancelled(api):
    job = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}, "delay_s": 2}).json()
    assert api.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    time.sleep(3.5)
    after = api.get(f"/jobs/{job['id']}").json()
    assert after["state"] == "cancelled" and after["attempts"] == 0


# -- idempotency ------------------------------------------------------------------


def test_same_key_same_body_returns_the_first_job(api):
    key = uuid.uuid4().hex
    body = {"type": "diagnostics.echo", "payload": {"data": "once"}}
    first = api.post("/jobs", json=body, headers={"Idempotency-Key": key})
    again = api.post("/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]


def test_same_key_different_body_is_a_conflict(api):
    key = uuid.uuid4().hex
    first = api.post(
        "/jobs",
        json={"type": "diagnostics.echo", "payload": {"data": 1}},
        headers={"Idempotency-Key": key},
    )
    error = assert_error(
        api.post(
            "/jobs",
            json={"type": "diagnostics.echo", "payload": {"data": 2}},
            headers={"Idempotency-Key": key},
        ),
        409,
        "idempotency_key_reused",
    )
    assert error["details"]["job_id"] == first.json()["id"]


def test_different_keys_make_different_jobs_and_bad_keys_are_400(api):
    body = {"type": "diagnostics.echo", "payload": {}}
    a = api.post("/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}).json()
    b = api.post("/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}).json()
    assert a["id"] != b["id"]
    assert_error(
        api.post("/jobs", json=body, headers={"Idempotency-Key": "x" * 256}),
        400,
        "invalid_idempotency_key",
    )
