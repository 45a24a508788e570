"""What clients see while the broker or Redis is down, on the chaos platform's own nodes."""

import signal
import socket
import time
import uuid

import httpx
import pytest

from tasks.core.messages import RECORDED_HEADER
from tasks.factory import create_celery_app
from tests.integration.helpers import assert_error, follow, submit_until_accepted, wait_for_state
from tests.services import wait_until

pytestmark = pytest.mark.integration


def job_keys(chaos) -> int:
    return sum(1 for _ in chaos.store.scan_iter("taskplane:job:*", count=1000))


def test_broker_down_is_503_with_retry_after_and_no_job_record(chaos):
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        before = job_keys(chaos)
        chaos.rabbit.stop_app()
        try:
            for _ in range(3):
                started = time.monotonic()
                response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}})
                assert time.monotonic() - started < 8, "a submit must not hang on a dead broker"
                assert_error(response, 503, "unavailable")
                assert int(response.headers["Retry-After"]) > 0
            assert job_keys(chaos) == before
            assert_error(api.post("/queues/diagnostics/pause"), 503, "unavailable")
            assert not chaos.store.sismember("taskplane:paused-queues", "diagnostics")
            assert api.get("/health/live").status_code == 200
            assert api.get("/job-types").status_code == 200
        finally:
            chaos.rabbit.start_app()
        job_id = submit_until_accepted(api)
        wait_for_state(api, job_id, "succeeded", 60)


def test_redis_down_is_503_for_what_needs_it_and_the_rest_still_answers(chaos):
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        known = submit_until_accepted(api)
        chaos.redis_node.stop()
        try:
            assert_error(
                api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}}),
                503,
                "unavailable",
            )
            response = api.get(f"/jobs/{known}")
            assert_error(response, 503, "unavailable")
            assert "Retry-After" in response.headers
            assert api.get("/health/live").status_code == 200
            assert api.get("/openapi.json").status_code == 200
        finally:
            chaos.redis_node.start()
        wait_for_state(api, known, "succeeded", 60)


def test_a_message_the_web_gave_up_on_is_not_run(chaos):
    """The web removed the record and answered 503; the broker still took the message."""
    producer = create_celery_app(
        "testing",
        overrides={"broker_url": chaos.rabbit.url, "result_backend": chaos.redis_node.url},
    )
    ghost = str(uuid.uuid4())
    producer.send_task(
        "diagnostics.sleep",
        args=({"seconds": 0, "effect": True},),
        task_id=ghost,
        queue="diagnostics",
        headers={RECORDED_HEADER: True},
    )
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        control = submit_until_accepted(api)
        wait_for_state(api, control, "succeeded", 30)
        wait_until(
            lambda: _queue_idle(chaos, "diagnostics"),
            30,
            0.5,
            what="the diagnostics queue to drain",
        )
        assert_error(api.get(f"/jobs/{ghost}"), 404, "job_not_found")
    assert chaos.store.hget("taskplane:diagnostics:effects", ghost) is None


def _queue_idle(chaos, queue):
    out = chaos.rabbit.ctl("list_queues", "name", "messages", "--quiet", "--no-table-headers")
    counts = dict(line.split() for line in out.splitlines() if line.strip())
    return counts.get(queue) == "0"


def test_a_scheduled_job_survives_a_broker_restart_while_it_waits(chaos):
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        job = api.post(
            "/jobs",
            json={
                "type": "diagnostics.sleep",
                "delay_s": 10,
                "payload": {"seconds": 0, "effect": True},
            },
        ).json()
        assert job["state"] == "scheduled"
        chaos.rabbit.restart()
        assert api.get(f"/jobs/{job['id']}").json()["state"] == "scheduled"
        wait_for_state(api, job["id"], "succeeded", 60)
    assert chaos.store.hget("taskplane:diagnostics:effects", job["id"]) == b"1"


def test_sigterm_to_gunicorn_finishes_the_request_in_flight(chaos):
    """A client halfway through sending its request still gets its answer."""
    web, base = chaos.platform.start_web()
    port = int(base.rsplit(":", 1)[1])
    body = b'{"type": "diagnostics.echo", "payload": {"data": "in flight"}}'
    head = (
        f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head + body[:10])
        time.sleep(0.5)
        web.popen.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        conn.sendall(body[10:])
        reply = conn.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
    web.popen.wait(40)
    assert web.popen.returncode == 0


def _ready(api):
    started = time.monotonic()
    response = api.get("/health/ready")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"/health/ready took {elapsed:.2f}s"
    return response.status_code, response.json()


def _wait_ready(api, status, timeout=60):
    return wait_until(
        lambda: (r := _ready(api))[0] == status and r,
        timeout,
        0.3,
        what=f"/health/ready to answer {status}",
    )


def test_ready_flips_to_503_naming_the_broker_and_back(chaos):
    with httpx.Client(base_url=chaos.web_url, timeout=10) as api:
        _wait_ready(api, 200)
        chaos.rabbit.stop_app()
        try:
            _, body = _wait_ready(api, 503, timeout=10)
            assert body["status"] == "DOWN"
            assert body["components"]["rabbitmq"]["status"] == "DOWN"
            assert body["components"]["redis"]["status"] == "UP"
        finally:
            chaos.rabbit.start_app()
        _, body = _wait_ready(api, 200)
        assert body["components"]["rabbitmq"]["status"] == "UP"


def test_ready_flips_to_503_naming_redis_and_back(chaos):
    with httpx.Client(base_url=chaos.web_url, timeout=10) as api:
        _wait_ready(api, 200)
        chaos.redis_node.stop()
        try:
            _, body = _wait_ready(api, 503, timeout=10)
            assert body["components"]["redis"]["status"] == "DOWN"
            assert body["components"]["rabbitmq"]["status"] == "UP"
        finally:
            chaos.redis_node.start()
        _wait_ready(api, 200)


def test_ready_flips_to_503_when_a_queue_has_no_consumer(chaos):
    producer = create_celery_app(
        "testing",
        overrides={"broker_url": chaos.rabbit.url, "result_backend": chaos.redis_node.url},
    )
    nodes = [w.node for w in chaos.workers.values()]
    with httpx.Client(base_url=chaos.web_url, timeout=10) as api:
        _wait_ready(api, 200)
        # Right after a broker restart the first connection can be reset: retry.
        wait_until(
            lambda: producer.control.cancel_consumer(
                "email", destination=nodes, reply=True, timeout=5
            ),
            20,
            1,
            what="cancel_consumer to reach the workers",
        )
        try:
            _, body = _wait_ready(api, 503, timeout=10)
            assert body["components"]["workers"]["email"] == {"status": "DOWN", "consumers": 0}
            assert body["components"]["workers"]["logs"]["status"] == "UP"
        finally:
            wait_until(
                lambda: producer.control.add_consumer(
                    "email", destination=nodes, reply=True, timeout=5
                ),
                20,
                1,
                what="add_consumer to reach the workers",
            )
        _wait_ready(api, 200)


def test_submits_after_the_broker_dropped_the_webs_connections_are_accepted(chaos):
    """An idle web's pooled connections can be dead (missed heartbeats, a proxy's
    idle cut, a broker restart): the next submit must reconnect, not answer 503."""
    batch = {"jobs": [{"type": "diagnostics.echo", "payload": {"data": n}} for n in range(5)]}
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        for _ in range(4):  # every gunicorn worker gets a pooled connection
            assert api.post("/jobs/batch", json=batch).status_code == 202
            submit_until_accepted(api)
        chaos.rabbit.ctl("close_all_connections", "test: connections dropped")
        accepted = []
        for _ in range(4):
            response = api.post("/jobs/batch", json=batch)
            assert response.status_code == 202, response.text
            accepted += [job["id"] for job in response.json()["jobs"]]
            response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}})
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        for job_id in accepted:
            wait_for_state(api, job_id, "succeeded", 60)


def test_a_deleted_queue_is_declared_again_by_the_next_submit(chaos):
    """Publishes are mandatory: a message no queue takes is not a 202, it is a retry."""
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        for _ in range(8):  # the web's publishing threads have declared the queue
            submit_until_accepted(api)
        chaos.rabbit.ctl("delete_queue", "diagnostics")
        accepted = []
        for _ in range(4):
            response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {}})
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        # Celery workers do not come back to a queue deleted under them (the
        # readiness check reports it without consumers); restarted, they do.
        for process in chaos.workers.values():
            process.stop()
        chaos.ensure_workers()
        for job_id in accepted:
            wait_for_state(api, job_id, "succeeded", 90)


def test_a_worker_killed_in_the_middle_of_an_effect_leaves_a_claim_that_lapses(chaos):
    """The rerun waits for the dead run's claim (6 s lease in testing), then acts once.

    With the claim lasting the job's time limit, or with waiting spending
    attempts (diagnostics.sleep has three), this job would end failed.
    """
    with httpx.Client(base_url=chaos.web_url, timeout=30) as api:
        response = api.post(
            "/jobs",
            json={
                "type": "diagnostics.sleep",
                "payload": {"seconds": 0, "effect": True, "effect_s": 4},
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        claim_key = f"taskplane:effect:{job_id}:effect"
        wait_until(
            lambda: (chaos.store.get(claim_key) or b"").startswith(b"pending:"),
            30,
            0.02,
            what="the job to claim its effect",
        )
        node = chaos.store.hget(f"taskplane:job:{job_id}", "worker").decode()
        victim = next(name for name, w in chaos.workers.items() if w.node == node)
        chaos.workers[victim].signal_group(signal.SIGKILL)
        chaos.workers[victim].popen.wait(10)
        killed_at = time.monotonic()
        assert chaos.store.get(claim_key).startswith(b"pending:")  # left behind

        view, _ = follow(api, job_id, timeout=60)
        assert view["state"] == "succeeded", view
        assert view["attempts"] >= 2, view
        assert time.monotonic() - killed_at < 40
        assert chaos.store.hget("taskplane:diagnostics:effects", job_id) == b"1"
