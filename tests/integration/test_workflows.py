"""Workflows over HTTP, run by the session's real worker: each shape and each failure path.

Every step is an ordinary job; the tests read the workflow's view (GET /workflows/<id>)
and the steps' job records, and a real HTTP target stands in for a failing, then
fixed, downstream service.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.helpers import follow, wait_for_workflow
from tests.peers import HttpTarget

pytestmark = pytest.mark.integration


def post(api: httpx.Client, *steps: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/workflows", json={"steps": list(steps)})
    assert response.status_code == 202, response.text
    assert response.headers["Location"].endswith(f"/workflows/{response.json()['id']}")
    return response.json()


def steps_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in view["steps"]}


def echo(step_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "diagnostics.echo", "payload": {"data": data}, **extra}


def total(step_id: str, values: Any, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "diagnostics.sum", "payload": {"values": values}, **extra}


def ref(step: str, path: str = "") -> dict[str, str]:
    return {"$result": step, "path": path} if path else {"$result": step}


def test_a_chain_of_three_passes_results_along(api: httpx.Client) -> None:
    created = post(
        api,
        echo("fetch", {"n": 1}),
        total("add", [ref("fetch", "data.n"), 10], depends_on=["fetch"]),
        echo("report", ref("add", "sum"), depends_on=["add"]),
    )
    assert {s["id"]: s["state"] for s in created["steps"]}["add"] == "waiting"
    view = wait_for_workflow(api, created["id"], "succeeded")
    steps = steps_of(view)
    assert steps["add"]["result"] == {"sum": 11, "count": 2}
    assert steps["report"]["result"] == {"data": 11}
    assert all(s["attempts"] == 1 and s["job_id"] for s in steps.values())
    # Each step is an ordinary job, readable as one.
    job = api.get(f"/jobs/{steps['report']['job_id']}").json()
    assert job["state"] == "succeeded" and job["type"] == "diagnostics.echo"


def test_a_fan_out_of_twenty_and_a_fan_in_that_sums_them(api: httpx.Client) -> None:
    created = post(
        api,
        echo("numbers", list(range(1, 21))),
        {
            "id": "square",
            "type": "diagnostics.sum",
            "depends_on": ["numbers"],
            "map": ref("numbers", "data"),
            "payload": {"values": [{"$item": ""}, {"$item": ""}]},
        },
        total("sum", ref("square", "*.sum"), depends_on=["square"]),
    )
    view = wait_for_workflow(api, created["id"], "succeeded")
    steps = steps_of(view)
    assert steps["square"]["items"]["total"] == 20
    assert [r["sum"] for r in steps["square"]["result"]] == [2 * n for n in range(1, 21)]
    assert steps["sum"]["result"] == {"sum": 420, "count": 20}
    assert len(set(steps["square"]["items"]["job_ids"])) == 20


def test_a_diamond_runs_the_join_once_after_both_branches(api: httpx.Client) -> None:
    created = post(
        api,
        echo("a", 2),
        total("b", [ref("a", "data"), 3], depends_on=["a"]),
        total("c", [ref("a", "data"), 4], depends_on=["a"]),
        total("d", [ref("b", "sum"), ref("c", "sum")], depends_on=["b", "c"]),
    )
    view = wait_for_workflow(api, created["id"], "succeeded")
    steps = steps_of(view)
    assert steps["d"]["result"]["sum"] == 11 and steps["d"]["attempts"] == 1
    jobs = {sid: api.get(f"/jobs/{steps[sid]['job_id']}").json() for sid in "bcd"}
    assert jobs["d"]["started_at"] >= max(jobs["b"]["finished_at"], jobs["c"]["finished_at"])


def test_a_permanent_failure_fails_the_workflow_and_a_replay_resumes_it(
    api: httpx.Client, http_target: HttpTarget
) -> None:
    hook = f"{http_target.base}/hooks/sequence/{uuid.uuid4().hex}?codes=400,200"
    created = post(
        api,
        echo("start"),
        {
            "id": "deliver",
            "type": "webhook.deliver",
            "payload": {"url": hook, "body": {"hello": "world"}},
            "depends_on": ["start"],
        },
        echo("after", "done", depends_on=["deliver"]),
        echo("side", "independent", depends_on=["start"]),
    )
    failed = wait_for_workflow(api, created["id"], "failed")
    steps = steps_of(failed)
    assert failed["failed_step"] == "deliver"
    assert steps["deliver"]["state"] == "failed" and steps["deliver"]["error"]
    assert steps["after"]["state"] == "cancelled" and "deliver" in steps["after"]["reason"]
    assert steps["after"]["job_id"] is None  # it never ran

    # The downstream service is fixed (it answers 200 now): replay the dead letter.
    job_id = steps["deliver"]["job_id"]
    replay = api.post("/queues/webhooks/dead/replay", json={"ids": [job_id]})
    assert replay.status_code == 200, replay.text
    view = wait_for_workflow(api, created["id"], "succeeded")
    steps = steps_of(view)
    assert steps["after"]["result"] == {"data": "done"}
    assert steps["deliver"]["attempts"] == 1  # the replay's run
    assert api.get(f"/jobs/{job_id}").json()["history"]  # the failed run kept


def test_retry_over_http_resumes_a_failed_workflow(
    api: httpx.Client, http_target: HttpTarget
) -> None:
    hook = f"{http_target.base}/hooks/sequence/{uuid.uuid4().hex}?codes=400,200"
    created = post(
        api,
        {"id": "deliver", "type": "webhook.deliver", "payload": {"url": hook, "body": {}}},
        echo("after", depends_on=["deliver"]),
    )
    wait_for_workflow(api, created["id"], "failed")
    response = api.post(f"/workflows/{created['id']}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "running"
    view = wait_for_workflow(api, created["id"], "succeeded")
    assert steps_of(view)["after"]["state"] == "succeeded"


def test_a_step_that_retries_twice_then_succeeds(
    api: httpx.Client, http_target: HttpTarget
) -> None:
    hook = f"{http_target.base}/hooks/flaky/{uuid.uuid4().hex}?fail=2"
    created = post(
        api,
        {"id": "deliver", "type": "webhook.deliver", "payload": {"url": hook, "body": {}}},
        echo("after", "ok", depends_on=["deliver"]),
    )
    view = wait_for_workflow(api, created["id"], "succeeded", timeout=90)
    steps = steps_of(view)
    assert steps["deliver"]["attempts"] == 3
    assert steps["after"]["attempts"] == 1 and steps["after"]["result"] == {"data": "ok"}


def test_a_cancelled_workflow_never_runs_its_waiting_steps(api: httpx.Client) -> None:
    created = post(
        api,
        {"id": "slow", "type": "diagnostics.sleep", "payload": {"seconds": 2}},
        echo("next", depends_on=["slow"]),
        echo("last", depends_on=["next"]),
    )
    response = api.delete(f"/workflows/{created['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    time.sleep(4)  # the slow step ran or was cancelled; nothing after it may start
    view = api.get(f"/workflows/{created['id']}").json()
    steps = steps_of(view)
    assert view["state"] == "cancelled"
    assert steps["slow"]["state"] in ("succeeded", "cancelled")
    for sid in ("next", "last"):
        assert steps[sid]["job_id"] is None and steps[sid]["state"] == "cancelled", steps[sid]


def test_a_payload_that_does_not_fit_once_resolved_fails_its_step(api: httpx.Client) -> None:
    created = post(
        api,
        echo("words", "not numbers"),
        total("sum", ref("words", "data"), depends_on=["words"]),
    )
    view = wait_for_workflow(api, created["id"], "failed")
    step = steps_of(view)["sum"]
    assert step["state"] == "failed" and step["job_id"] is None
    assert "payload.values" in step["error"]["message"]


def test_every_step_of_a_workflow_is_one_trace(api: httpx.Client, worker) -> None:  # noqa: ANN001
    created = post(api, echo("a", 1), echo("b", ref("a"), depends_on=["a"]))
    steps = steps_of(wait_for_workflow(api, created["id"], "succeeded"))
    traces = set()
    for line in worker.json_lines():
        if line.get("job_id") in {steps["a"]["job_id"], steps["b"]["job_id"]}:
            traces.add(line.get("trace_id"))
    assert len(traces) == 1 and "-" not in traces, traces
    follow(api, steps["b"]["job_id"])
