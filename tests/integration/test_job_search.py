"""Finding jobs and acting on many, through HTTP, on the real web, worker, RabbitMQ and Redis.

Every test tags its jobs with a tag of its own (``run:<uuid>``) and filters by
it, so jobs of other tests in the shared Redis never leak into what it counts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.helpers import follow

pytestmark = pytest.mark.integration
FINAL = {"succeeded", "failed", "cancelled"}


def run_tag() -> str:
    return uuid.uuid4().hex[:12]


def post_jobs(api: httpx.Client, jobs: list[dict]) -> list[dict]:
    """Submit through /jobs/batch in slices of 1,000; every job accepted."""
    accepted = []
    for start in range(0, len(jobs), 1000):
        response = api.post("/jobs/batch", json={"jobs": jobs[start : start + 1000]})
        assert response.status_code == 202, response.text
        accepted += response.json()["jobs"]
    return accepted


def listing(api: httpx.Client, **params) -> list[dict]:
    """Every page of a search, in order."""
    jobs, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = api.get("/jobs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        jobs += body["jobs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return jobs


def wait_final(api: httpx.Client, ids: list[str], timeout: float = 60) -> dict[str, dict]:
    views = {}
    for job_id in ids:
        views[job_id], _ = follow(api, job_id, timeout)
    return views


def test_search_by_each_filter_and_by_combinations(api: httpx.Client) -> None:
    run = run_tag()
    before = datetime.now(UTC) - timedelta(seconds=1)
    echo = [
        {"type": "diagnostics.echo", "payload": {}, "tags": {"run": run, "tenant": "acme"}}
        for _ in range(6)
    ]
    other = [
        {"type": "diagnostics.echo", "payload": {}, "tags": {"run": run, "tenant": "globex"}}
        for _ in range(4)
    ]
    failing = [
        {
            "type": "diagnostics.fail",
            "payload": {"permanent": True},
            "tags": {"run": run, "tenant": "acme"},
        }
        for _ in range(3)
    ]
    later = [
        {"type": "diagnostics.echo", "payload": {}, "delay_s": 600, "tags": {"run": run}}
        for _ in range(2)
    ]
    accepted = post_jobs(api, echo + other + failing)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    accepted += post_jobs(api, later)
    wait_final(api, [j["id"] for j in accepted[:13]])
    views = {j["id"]: api.get(f"/jobs/{j['id']}").json() for j in accepted}

    def expect(check) -> set[str]:
        return {i for i, v in views.items() if check(v)}

    def found(**params) -> set[str]:
        jobs = listing(api, tag=[f"run:{run}", *params.pop("tag", [])], **params)
        ids = [j["id"] for j in jobs]
        assert len(ids) == len(set(ids)), "a job listed twice"
        return set(ids)

    assert found() == set(views)
    assert found(state="succeeded") == expect(lambda v: v["state"] == "succeeded")
    assert len(found(state="succeeded")) == 10
    assert found(state="failed") == expect(lambda v: v["state"] == "failed") != set()
    assert found(state="scheduled") == expect(lambda v: v["state"] == "scheduled") != set()
    assert found(type="diagnostics.fail") == expect(lambda v: v["type"] == "diagnostics.fail")
    assert found(queue="diagnostics") == set(views)
    assert found(queue="webhooks") == set()
    assert found(tag=["tenant:acme"]) == expect(lambda v: v["tags"].get("tenant") == "acme")
    assert found(tag=["tenant:acme"], state="failed") == expect(
        lambda v: v["tags"].get("tenant") == "acme" and v["state"] == "failed"
    )
    assert found(tag=["tenant:globex"], type="diagnostics.fail") == set()
    assert found(created_after=middle.isoformat()) == {j["id"] for j in accepted[13:]}
    assert found(created_before=middle.isoformat()) == {j["id"] for j in accepted[:13]}
    assert found(
        created_after=before.isoformat(), created_before=middle.isoformat(), state="failed"
    ) == expect(lambda v: v["state"] == "failed")
    # Newest first, and the page's jobs are the records as GET /jobs/<id> shows them.
    jobs = listing(api, tag=f"run:{run}")
    stamps = [j["created_at"] for j in jobs]
    assert stamps == sorted(stamps, reverse=True)
    for job in jobs:
        assert job == views[job["id"]]


def test_paging_through_2500_jobs_while_new_ones_arrive(api: httpx.Client) -> None:
    run = run_tag()
    job = {"type": "diagnostics.echo", "payload": {}, "tags": {"run": run}}
    existing = {j["id"] for j in post_jobs(api, [job] * 2500)}
    arrivals: list[str] = []
    stop = threading.Event()

    def keep_submitting() -> None:
        with httpx.Client(base_url=str(api.base_url), headers=api.headers, timeout=10) as client:
            while not stop.is_set():
                response = client.post("/jobs/batch", json={"jobs": [job] * 20})
                if response.status_code == 202:
                    arrivals.extend(j["id"] for j in response.json()["jobs"])
                time.sleep(0.02)

    arriving = threading.Thread(target=keep_submitting, daemon=True)
    arriving.start()
    try:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"tag": f"run:{run}", "limit": 100, **({"cursor": cursor} if cursor else {})}
            body = api.get("/jobs", params=params).json()
            seen += [j["id"] for j in body["jobs"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
            time.sleep(0.01)
    finally:
        stop.set()
        arriving.join(10)
    assert arrivals, "no job arrived while paging"
    assert len(seen) == len(set(seen)), "a job came twice"
    assert existing <= set(seen), f"{len(existing - set(seen))} existing jobs skipped"
    assert pages >= 25


def test_stats_count_jobs_per_state_and_type(api: httpx.Client) -> None:
    before = api.get("/jobs/stats").json()
    run = run_tag()
    accepted = post_jobs(
        api,
        [{"type": "diagnostics.sum", "payload": {"values": [1, 2]}, "tags": {"run": run}}] * 7,
    )
    wait_final(api, [j["id"] for j in accepted])
    after = api.get("/jobs/stats").json()
    grown = after["types"]["diagnostics.sum"].get("succeeded", 0) - before["types"].get(
        "diagnostics.sum", {}
    ).get("succeeded", 0)
    assert grown == 7
    assert after["total"] == sum(after["states"].values())
    assert set(after["states"]) >= {"queued", "started", "succeeded", "failed", "cancelled"}


def test_bulk_cancel_of_500_queued_jobs_of_one_tag_none_of_them_runs(api: httpx.Client) -> None:
    run = run_tag()
    paused = api.post("/queues/diagnostics/pause")
    assert paused.status_code == 200, paused.text
    try:
        accepted = post_jobs(
            api,
            [{"type": "diagnostics.echo", "payload": {}, "tags": {"run": run, "tenant": "acme"}}]
            * 500,
        )
        keep = post_jobs(api, [{"type": "diagnostics.echo", "payload": {}, "tags": {"run": run}}])
        selection = {"filter": {"tag": [f"run:{run}", "tenant:acme"], "state": "queued"}}
        dry = api.post("/jobs/cancel", json={**selection, "dry_run": True}).json()
        assert dry["matched"] == 500 and dry["acted"] == 0 and dry["more"] is False, dry
        assert listing(api, tag=f"run:{run}", state="queued", limit=500).__len__() == 501
        done = api.post("/jobs/cancel", json=selection)
        assert done.status_code == 200, done.text
        report = done.json()
        assert report["acted"] == 500 and set(report["ids"]) == {j["id"] for j in accepted}
    finally:
        assert api.post("/queues/diagnostics/resume").status_code == 200
    survivor, _ = follow(api, keep[0]["id"])
    assert survivor["state"] == "succeeded"
    time.sleep(1)
    for job in accepted:
        view = api.get(f"/jobs/{job['id']}").json()
        assert view["state"] == "cancelled" and view["attempts"] == 0, view
    assert len(listing(api, tag=f"run:{run}", state="cancelled", limit=500)) == 500


def test_bulk_replay_of_failed_jobs_since_a_time(api: httpx.Client) -> None:
    run = run_tag()
    failing = {
        "type": "diagnostics.fail",
        "payload": {"permanent": True, "message": "bad"},
        "tags": {"run": run},
    }
    old = post_jobs(api, [failing] * 3)
    wait_final(api, [j["id"] for j in old])
    since = datetime.now(UTC)
    time.sleep(0.01)
    recent = post_jobs(api, [failing] * 4)
    wait_final(api, [j["id"] for j in recent])
    wait_dead_lettered(api, [j["id"] for j in old + recent])
    selection = {
        "filter": {"tag": [f"run:{run}"], "state": "failed", "created_after": since.isoformat()}
    }
    assert api.post("/jobs/replay", json={**selection, "dry_run": True}).json()["matched"] == 4
    report = api.post("/jobs/replay", json=selection).json()
    assert sorted(report["ids"]) == sorted(j["id"] for j in recent), report
    for job in recent:
        view = wait_history(api, job["id"], 1)
        assert view["history"][0]["state"] == "failed"
        assert view["history"][0]["payload_digest"] == digest(failing["payload"])
    for job in old:
        assert api.get(f"/jobs/{job['id']}").json()["history"] == []


def test_replay_with_a_corrected_payload_succeeds_and_keeps_history(api: httpx.Client) -> None:
    bad = {"times": None, "permanent": True, "message": "wrong account"}
    job = post_jobs(api, [{"type": "diagnostics.fail", "payload": bad}])[0]
    failed, _ = follow(api, job["id"])
    assert failed["state"] == "failed"
    invalid = api.post(f"/jobs/{job['id']}/replay", json={"payload": {"times": "many"}})
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["error"]["details"][0]["path"].startswith("payload")
    replayed = api.post(f"/jobs/{job['id']}/replay", json={"payload": {"times": 0}})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["id"] == job["id"]
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded", done
    assert len(done["history"]) == 1
    previous = done["history"][0]
    assert previous["state"] == "failed"
    assert previous["payload_digest"] == digest(bad)
    assert previous["payload_replaced"] is True
    assert "wrong account" not in json.dumps(previous.get("payload_digest"))
    again = api.post(f"/jobs/{job['id']}/replay")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_replayable"


def test_bulk_purge_deletes_finished_jobs_and_their_index_entries(api: httpx.Client) -> None:
    run = run_tag()
    accepted = post_jobs(
        api, [{"type": "diagnostics.echo", "payload": {}, "tags": {"run": run}}] * 5
    )
    wait_final(api, [j["id"] for j in accepted])
    ids = [j["id"] for j in accepted[:3]]
    report = api.post("/jobs/purge", json={"ids": [*ids, str(uuid.uuid4())]}).json()
    assert sorted(report["ids"]) == sorted(ids) and len(report["not_found"]) == 1, report
    for job_id in ids:
        assert api.get(f"/jobs/{job_id}").status_code == 404
    assert {j["id"] for j in listing(api, tag=f"run:{run}")} == {j["id"] for j in accepted[3:]}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"state": "sleeping"}, "invalid_parameter"),
        ({"tag": "no-colon"}, "invalid_parameter"),
        ({"created_after": "yesterday"}, "invalid_parameter"),
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "501"}, "invalid_parameter"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ],
)
def test_bad_search_parameters_are_400(api: httpx.Client, params: dict, code: str) -> None:
    response = api.get("/jobs", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": [], "dry_run": True},
        {"ids": ["x"]},
        {"filter": {"state": "started"}},
        {"ids": [str(uuid.uuid4())], "filter": {}},
    ],
)
def test_bad_bulk_bodies_are_422(api: httpx.Client, body: dict) -> None:
    response = api.post("/jobs/cancel", json=body)
    assert response.status_code == 422, response.text


def test_tags_are_bounded_and_validated(api: httpx.Client) -> None:
    too_many = {f"k{i}": "v" for i in range(17)}
    for tags in (too_many, {"bad key": "v"}, {"k": ""}, {"k": "x" * 129}, {"k:v": "1"}):
        response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}, "tags": tags})
        assert response.status_code == 422, (tags, response.text)
    ok = api.post(
        "/jobs", json={"type": "diagnostics.echo", "payload": {}, "tags": {"order": "12:34"}}
    )
    assert ok.status_code == 202
    assert ok.json()["tags"] == {"order": "12:34"}
    assert [j["id"] for j in listing(api, tag="order:12:34")][:1] == [ok.json()["id"]]


def wait_dead_lettered(api: httpx.Client, ids: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    for job_id in ids:
        while not api.get(f"/jobs/{job_id}").json().get("dead_lettered_at"):
            assert time.monotonic() < deadline, f"{job_id} never dead-lettered"
            time.sleep(0.05)


def wait_history(api: httpx.Client, job_id: str, runs: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = api.get(f"/jobs/{job_id}").json()
        if len(view["history"]) >= runs and view["state"] in FINAL:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def digest(payload: dict) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_schedules_and_workflow_steps_pass_their_tags_to_their_jobs(api: httpx.Client) -> None:
    run = run_tag()
    started = api.post(
        "/workflows",
        json={
            "steps": [{"id": "a", "type": "diagnostics.echo", "tags": {"run": run, "step": "x"}}]
        },
    )
    assert started.status_code == 202, started.text
    schedule_id = f"tags-{run}"
    created = api.post(
        "/schedules",
        json={
            "id": schedule_id,
            "type": "diagnostics.echo",
            "interval_s": 3600,
            "enabled": False,
            "tags": {"run": run},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["tags"] == {"run": run}
    try:
        assert api.post(f"/schedules/{schedule_id}/run").status_code in (200, 202)
        deadline = time.monotonic() + 20
        while len(jobs := listing(api, tag=f"run:{run}")) < 2:
            assert time.monotonic() < deadline, jobs
            time.sleep(0.1)
    finally:
        api.delete(f"/schedules/{schedule_id}")
    by_origin = {("workflow" in j["tags"]): j["tags"] for j in jobs}
    step_tags = by_origin[True]
    assert step_tags["run"] == run and step_tags["step"] == "a", "the platform's tags win"
    assert step_tags["workflow"] == started.json()["id"]
    fired = by_origin[False]
    assert fired["run"] == run and fired["schedule"] == schedule_id and fired["trigger"] == "manual"
