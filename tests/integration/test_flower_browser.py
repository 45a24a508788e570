"""Flower as a person sees it: headless Chromium, with and without credentials.

Screenshots are kept in var/test-artifacts/ for a human to look at; the
assertions read the rendered DOM of the same pages.
"""

import httpx
import pytest

from tests.integration.helpers import ARTIFACTS, CHROMIUM, chromium, follow, submit
from tests.services import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed: run scripts/ensure-test-tools.sh as root"
)
def test_flower_shows_the_worker_online_and_the_job_in_the_tasks_view(api, platform, worker):
    _, flower = platform.start_flower(basic_auth="ops:s3cret", sees_worker=worker.node)
    job = submit(api, "diagnostics.echo", {"data": "for the browser"})
    assert follow(api, job["id"])[0]["state"] == "succeeded"
    with httpx.Client(base_url=flower, auth=("ops", "s3cret"), timeout=10) as client:
        wait_until(
            lambda: client.get(f"/api/task/info/{job['id']}").status_code == 200,
            30,
            0.5,
            what="Flower to record the job",
        )
    authed = flower.replace("http://", "http://ops:s3cret@")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    workers_dom = chromium(f"{authed}/workers", "--dump-dom")
    assert worker.node in workers_dom
    assert "Online" in workers_dom or "online" in workers_dom
    tasks_dom = chromium(f"{authed}/tasks", "--dump-dom")
    assert job["id"] in tasks_dom and "diagnostics.echo" in tasks_dom

    for page in ("workers", "tasks"):
        shot = ARTIFACTS / f"flower-{page}.png"
        shot.unlink(missing_ok=True)
        chromium(f"{authed}/{page}", f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot at {shot}"

    refused = chromium(f"{flower}/workers", "--dump-dom")
    assert worker.node not in refused and job["id"] not in refused
    assert httpx.get(f"{flower}/workers", timeout=5).status_code == 401
