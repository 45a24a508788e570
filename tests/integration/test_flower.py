"""Flower, started as make run starts it, sees our worker and our jobs."""

import httpx
import pytest

from tests.integration.helpers import follow, submit
from tests.services import wait_until

pytestmark = pytest.mark.integration


def test_flower_lists_the_worker_and_the_jobs_it_ran(api, platform, worker):
    _, flower = platform.start_flower(basic_auth="ops:s3cret", sees_worker=worker.node)
    assert httpx.get(f"{flower}/api/workers", timeout=5).status_code == 401
    with httpx.Client(base_url=flower, timeout=10, auth=("ops", "s3cret")) as client:
        wait_until(
            lambda: worker.node in client.get("/api/workers?refresh=1").json(),
            30,
            0.5,
            what=f"Flower to see {worker.node}",
        )
        job = submit(api, "diagnostics.echo", {"data": "seen by flower"})
        follow(api, job["id"])
        info = wait_until(
            lambda: _task(client, job["id"]), 30, 0.5, what="Flower to record the task"
        )
        assert info["name"] == "diagnostics.echo"
        assert info["worker"] == worker.node


def _task(client, task_id):
    response = client.get(f"/api/task/info/{task_id}")
    if response.status_code == 200 and response.json().get("state") == "SUCCESS":
        return response.json()
    return None
