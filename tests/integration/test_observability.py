"""Operating the platform: readiness, trace ids in logs, metrics, consumer switches."""

import json
import re
import time
import uuid

import httpx
import pytest

from tests.integration.helpers import follow, submit
from tests.services import wait_until

pytestmark = pytest.mark.integration
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def json_lines(process) -> list[dict]:  # noqa: ANN001 - tests.services.Process
    return process.json_lines()


def test_ready_reports_each_component_within_a_second(api):
    started = time.monotonic()
    response = api.get("/health/ready")
    assert time.monotonic() - started < 1.0
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "UP"
    assert body["components"]["rabbitmq"]["status"] == "UP"
    assert body["components"]["redis"]["status"] == "UP"
    workers = body["components"]["workers"]
    assert set(workers) == {"webhooks", "email", "logs", "diagnostics"}
    assert all(q["status"] == "UP" and q["consumers"] >= 1 for q in workers.values())


def test_a_traceparent_reaches_the_worker_logs_through_a_retry(api, web, worker):
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    response = api.post(
        "/jobs",
        json={"type": "diagnostics.fail", "payload": {"times": 1}},
        headers={"traceparent": traceparent, "X-Request-ID": "req-123"},
    )
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "req-123"
    job_id = response.json()["id"]
    done, _ = follow(api, job_id)
    assert done["state"] == "succeeded" and done["attempts"] == 2

    def worker_lines():
        lines = [line for line in json_lines(worker) if line.get("job_id") == job_id]
        return lines if {line.get("attempt") for line in lines} >= {1, 2} else None

    lines = wait_until(worker_lines, 10, 0.2, what="worker log lines of both attempts")
    assert {line["trace_id"] for line in lines} == {TRACE_ID}
    assert all(
        line["job_type"] == "diagnostics.fail"
        and line["queue"] == "diagnostics"
        and line["worker"] == worker.node
        for line in lines
    )
    web_lines = [line for line in json_lines(web[0]) if line.get("request_id") == "req-123"]
    assert web_lines and {line["trace_id"] for line in web_lines} == {TRACE_ID}
    assert any("POST /jobs 202" in line["message"] for line in web_lines)


def test_a_request_without_traceparent_starts_a_trace(api, worker):
    job = submit(api, "diagnostics.echo", {"data": "new trace"})
    follow(api, job["id"])
    lines = wait_until(
        lambda: [line for line in json_lines(worker) if line.get("job_id") == job["id"]],
        10,
        0.2,
        what="worker log lines",
    )
    trace_ids = {line["trace_id"] for line in lines}
    assert len(trace_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", trace_ids.pop())


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_count_a_burst_across_gunicorn_workers(api, web_url):
    before = httpx.get(f"{web_url}/metrics").text
    submitted_before = sum(
        _samples(before, 'taskplane_jobs_submitted_total{type="diagnostics.echo"}').values()
    )
    ids = []
    with httpx.Client(base_url=web_url, timeout=10) as fresh:  # new connections: both workers
        for _ in range(40):
            response = fresh.post(
                "/jobs",
                json={"type": "diagnostics.echo", "payload": {}},
                headers={"Connection": "close"},
            )
            assert response.status_code == 202
            ids.append(response.json()["id"])
    for job_id in ids:
        follow(api, job_id)
    text = httpx.get(f"{web_url}/metrics").text
    submitted = sum(
        _samples(text, 'taskplane_jobs_submitted_total{type="diagnostics.echo"}').values()
    )
    assert submitted - submitted_before == 40
    posts = _samples(text, "taskplane_http_requests_total{")
    assert (
        sum(
            v
            for k, v in posts.items()
            if 'route="/jobs"' in k and 'status="202"' in k and 'method="POST"' in k
        )
        >= 40
    )
    counts = _samples(text, "taskplane_http_request_duration_seconds_count{")
    assert sum(v for k, v in counts.items() if 'route="/jobs"' in k) >= 40
    for series in (
        'taskplane_queue_messages{queue="diagnostics",state="ready"}',
        'taskplane_queue_messages{queue="diagnostics",state="dead"}',
        'taskplane_queue_consumers{queue="diagnostics"}',
        'taskplane_queue_paused{queue="diagnostics"}',
    ):
        assert series in text, series
    assert _samples(text, 'taskplane_publish_failures_total{type="diagnostics.echo"}')


def test_queues_lists_depth_consumers_pause_and_dead_letters(api):
    queues = {q["name"]: q for q in api.get("/queues").json()["queues"]}
    assert set(queues) == {"webhooks", "email", "logs", "diagnostics"}
    diagnostics = queues["diagnostics"]
    assert diagnostics["enabled"] is True and diagnostics["consumers"] >= 1
    assert diagnostics["paused"] is False
    assert {"ready", "unacked", "consumers", "dead"} <= set(diagnostics)


def test_pause_holds_a_queue_even_across_a_worker_restart_and_resume_releases_it(api, platform):
    paused = api.post("/queues/diagnostics/pause")
    extra = None
    try:
        assert paused.status_code == 200 and paused.json()["paused"] is True
        waiting = submit(api, "diagnostics.echo", {"data": "held"})
        other = submit(api, "logs.summarize", {"lines": ["2024-01-01T00:00:00Z INFO ok"]})
        assert follow(api, other["id"])[0]["state"] == "succeeded"
        assert api.get(f"/jobs/{waiting['id']}").json()["state"] == "queued"
        extra = platform.start_worker(f"restarted-{uuid.uuid4().hex[:4]}")
        time.sleep(2)
        assert api.get(f"/jobs/{waiting['id']}").json()["state"] == "queued"
        assert (
            next(q for q in api.get("/queues").json()["queues"] if q["name"] == "diagnostics")[
                "paused"
            ]
            is True
        )
        ready = api.get("/health/ready").json()
        assert ready["components"]["workers"]["diagnostics"]["status"] == "PAUSED"
    finally:
        resumed = api.post("/queues/diagnostics/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert follow(api, waiting["id"])[0]["state"] == "succeeded"
    if extra is not None:
        extra.stop()


def test_pausing_an_unknown_queue_is_404(api):
    assert api.post("/queues/nope/pause").status_code == 404


def test_a_worker_group_consumes_only_its_queues_with_its_pool(platform):
    import subprocess

    from tests.services import ROOT, VENV_BIN

    env = {**platform.env, "TASKPLANE_WORKER_GROUP": "io"}
    group_platform = type(platform)(env=env, log_dir=platform.log_dir)
    node = group_platform.start_worker(f"io-{uuid.uuid4().hex[:4]}", concurrency=None)
    try:

        def inspect(what):
            result = subprocess.run(
                [
                    str(VENV_BIN / "celery"),
                    "-A",
                    "tasks",
                    "inspect",
                    what,
                    "-d",
                    node.node,
                    "--json",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)[node.node]

        assert [q["name"] for q in inspect("active_queues")] == ["webhooks", "email"]
        pool = inspect("stats")["pool"]
        assert pool["max-concurrency"] == 16
        assert pool["implementation"] == "celery.concurrency.thread:TaskPool"
    finally:
        group_platform.stop_all()
