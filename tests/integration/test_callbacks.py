"""Completion callbacks on real services: a job naming ``callback_url`` has its view
POSTed there once it is final, signed, once, retried while the receiver is down.

The receiver is a small threaded HTTP server in the test process that keeps the
raw bytes of every request, and signatures are checked with the README's own
verification snippet and the development secret the testing environment uses.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tasks.core.callbacks import DEVELOPMENT_SECRET, callback_id
from tasks.core.jobstore import JobStore, redis_client
from tests.integration.helpers import follow
from tests.services import free_port, wait_until
from tests.unit.test_callback_signature import readme_verify

pytestmark = pytest.mark.integration

verify = readme_verify()


class Receiver:
    """Records every POST (path, headers, raw body, answer).

    ``/down/<key>?fail=N`` answers 503 to its first N requests, then 200; any other path 200.
    """

    def __init__(self, port: int | None = None) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlsplit(self.path)
                with receiver._lock:
                    seen = receiver.requests[path.path]
                    fail = int(parse_qs(path.query).get("fail", ["0"])[0])
                    status = 503 if len(seen) < fail else 200
                    seen.append({"headers": dict(self.headers), "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = port or free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests[urlsplit(path).path])

    def delivered(self, path: str, timeout: float = 30, count: int = 1) -> list[dict[str, Any]]:
        """Every request to ``path`` once ``count`` were answered 200, after a quiet second
        (a second callback, had one been made, would arrive in it)."""
        wait_until(
            lambda: sum(r["status"] == 200 for r in self.got(path)) >= count,
            timeout,
            0.05,
            what=f"a callback delivered to {path}",
        )
        time.sleep(1.5)
        return self.got(path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture()
def store(session_redis_url: str) -> JobStore:
    return JobStore(redis_client(session_redis_url, patient=False), finished_ttl_s=600)


def submit_with_callback(api: httpx.Client, job_type: str, payload: dict, url: str, **extra):
    response = api.post(
        "/jobs", json={"type": job_type, "payload": payload, "callback_url": url, **extra}
    )
    assert response.status_code == 202, response.text
    assert response.json()["callback_url"] == url
    return response.json()


def signed_view(request: dict[str, Any]) -> dict[str, Any]:
    """The body of a callback request, once its signature checked out."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert verify(DEVELOPMENT_SECRET, headers["x-taskplane-signature"], request["body"]), headers
    assert not verify("not-the-secret", headers["x-taskplane-signature"], request["body"])
    return json.loads(request["body"])


def header(request: dict[str, Any], name: str) -> str:
    return {k.lower(): v for k, v in request["headers"].items()}[name.lower()]


def test_a_finished_job_calls_back_once_with_its_signed_view(api, receiver):
    path = f"/hooks/{uuid.uuid4().hex}"
    # Non-ASCII data: the bytes signed (JSON with \u escapes) are not what a serializer
    # of the parsed body would send, so only the exact bytes verify.
    data = {"n": 7, "text": "façade ✓"}
    job = submit_with_callback(api, "diagnostics.echo", {"data": data}, receiver.url(path))
    done, _ = follow(api, job["id"])
    assert done["state"] == "succeeded"

    (request,) = receiver.delivered(path)
    view = signed_view(request)
    assert view["id"] == job["id"] and view["state"] == "succeeded"
    assert view["result"] == {"data": data} == done["result"]
    assert view["attempts"] == done["attempts"] == 1
    assert view["finished_at"] == done["finished_at"]
    assert not {"token", "publishing", "run"} & set(view)
    assert header(request, "X-Taskplane-Event") == "job.finished"
    assert header(request, "X-Taskplane-Job") == job["id"]

    # The callback is a webhook.deliver job of its own, linked to the job, without a callback.
    callback = follow(api, header(request, "Idempotency-Key"))[0]
    assert callback["type"] == "webhook.deliver" and callback["state"] == "succeeded"
    assert callback["id"] == callback_id(job["id"], 0, "succeeded")
    assert callback["parent_id"] == job["id"]
    assert callback.get("callback_url") is None
    assert callback["result"]["status_code"] == 200


def test_a_failed_job_calls_back_once_with_state_failed(api, receiver):
    path = f"/hooks/{uuid.uuid4().hex}"
    job = submit_with_callback(
        api, "diagnostics.fail", {"permanent": True, "message": "no way"}, receiver.url(path)
    )
    done, _ = follow(api, job["id"])
    assert done["state"] == "failed"
    # The worker that failed it and the dead-letter watcher both see this completion.
    wait_until(
        lambda: job["id"] in {i["id"] for i in api.get("/queues/diagnostics/dead").json()["items"]},
        30,
        0.2,
        what="the failed job among the dead letters",
    )
    (request,) = receiver.delivered(path)
    view = signed_view(request)
    assert view["id"] == job["id"] and view["state"] == "failed"
    assert view["error"]["type"] == "permanent"
    assert "no way" in view["error"]["message"]


def test_a_receiver_answering_503_gets_the_callback_on_a_retry(api, receiver):
    path = f"/down/{uuid.uuid4().hex}"
    job = submit_with_callback(api, "diagnostics.echo", {"data": 1}, receiver.url(path) + "?fail=2")
    follow(api, job["id"])

    requests = receiver.delivered(path, timeout=60)
    assert [r["status"] for r in requests] == [503, 503, 200]
    # Every attempt sends the same bytes, signature and Idempotency-Key.
    assert len({r["body"] for r in requests}) == 1
    assert len({header(r, "X-Taskplane-Signature") for r in requests}) == 1
    assert len({header(r, "Idempotency-Key") for r in requests}) == 1
    assert signed_view(requests[-1])["state"] == "succeeded"
    callback = follow(api, header(requests[-1], "Idempotency-Key"))[0]
    assert callback["state"] == "succeeded" and callback["attempts"] == 3


def test_a_receiver_that_is_not_listening_yet_gets_it_once_it_is(api):
    port = free_port()
    path = f"/hooks/{uuid.uuid4().hex}"
    job = submit_with_callback(
        api, "diagnostics.echo", {"data": 2}, f"http://127.0.0.1:{port}{path}"
    )
    follow(api, job["id"])
    callback = callback_id(job["id"], 0, "succeeded")
    wait_until(
        lambda: (
            api.get(f"/jobs/{callback}").json().get("attempts", 0) >= 1
            and api.get(f"/jobs/{callback}").json()["state"] in ("retrying", "started")
        ),
        30,
        0.1,
        what="the callback's first attempt to fail (connection refused)",
    )
    late = Receiver(port)
    try:
        (request,) = late.delivered(path, timeout=60)
    finally:
        late.stop()
    assert signed_view(request)["id"] == job["id"]
    done = follow(api, callback)[0]
    assert done["state"] == "succeeded" and done["attempts"] >= 2


def test_a_replayed_job_that_finishes_again_calls_back_again(api, receiver):
    path = f"/hooks/{uuid.uuid4().hex}"
    job = submit_with_callback(api, "diagnostics.fail", {"permanent": True}, receiver.url(path))
    follow(api, job["id"])
    (first,) = receiver.delivered(path)

    def replayed() -> bool:
        response = api.post("/queues/diagnostics/dead/replay", json={"ids": [job["id"]]})
        return response.status_code == 200 and response.json()["replayed"] == [job["id"]]

    wait_until(replayed, 30, 0.3, what="the dead letter to be replayed")
    wait_until(
        lambda: len([r for r in receiver.got(path) if r["status"] == 200]) >= 2,
        30,
        0.05,
        what="the replayed run's callback",
    )
    time.sleep(1.5)
    first_again, second = receiver.got(path)
    assert first_again == first
    assert header(second, "Idempotency-Key") != header(first, "Idempotency-Key")
    assert header(second, "Idempotency-Key") == callback_id(job["id"], 1, "failed")
    view = signed_view(second)
    assert view["state"] == "failed" and len(view["history"]) == 1
    assert "history" not in signed_view(first)


def test_a_job_finished_by_a_run_that_died_before_notifying_calls_back_on_redelivery(
    api, receiver, store
):
    """The worker recorded the final state and died before submitting the callback:
    the job's message comes again, finds the job finished and the callback goes then."""
    path = f"/hooks/{uuid.uuid4().hex}"
    job = submit_with_callback(api, "diagnostics.echo", {"data": 3}, receiver.url(path), delay_s=3)
    # Finish it as a worker would, behind the platform's back, before its message is due.
    started = store.start(job["id"], "diagnostics.echo", "diagnostics", "gone@host", recorded=True)
    assert started.proceed
    store.succeeded(job["id"], {"data": 3})
    time.sleep(1)
    assert receiver.got(path) == []  # nobody notified yet
    (request,) = receiver.delivered(path, timeout=30)
    view = signed_view(request)
    assert view["id"] == job["id"] and view["state"] == "succeeded"
    assert view["worker"] == "gone@host"


def test_a_cancelled_job_calls_back_once_with_state_cancelled(api, receiver):
    path = f"/hooks/{uuid.uuid4().hex}"
    # Its message is ten minutes away: the cancel itself must submit the callback.
    job = submit_with_callback(
        api, "diagnostics.echo", {"data": 4}, receiver.url(path), delay_s=600
    )
    response = api.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    (request,) = receiver.delivered(path, timeout=15)
    view = signed_view(request)
    assert view["id"] == job["id"] and view["state"] == "cancelled"
    assert header(request, "Idempotency-Key") == callback_id(job["id"], 0, "cancelled")


def test_a_bulk_cancel_calls_back_for_each_job_it_cancelled(api, receiver):
    path = f"/hooks/{uuid.uuid4().hex}"
    tag = uuid.uuid4().hex[:12]
    jobs = [
        api.post(
            "/jobs",
            json={
                "type": "diagnostics.echo",
                "payload": {"data": n},
                "delay_s": 600,
                "tags": {"run": tag},
                "callback_url": receiver.url(path),
            },
        ).json()
        for n in range(3)
    ]
    report = api.post("/jobs/cancel", json={"filter": {"tag": [f"run:{tag}"]}}).json()
    assert report["acted"] == 3, report
    requests = receiver.delivered(path, timeout=15, count=3)
    views = [signed_view(r) for r in requests]
    assert sorted(v["id"] for v in views) == sorted(j["id"] for j in jobs)
    assert {v["state"] for v in views} == {"cancelled"}


def test_a_job_that_keeps_killing_workers_calls_back_once_with_the_delivery_limit(api, receiver):
    path = f"/hooks/{uuid.uuid4().hex}"
    job = submit_with_callback(api, "diagnostics.crash", {}, receiver.url(path))
    done, _ = follow(api, job["id"], timeout=120)
    assert done["state"] == "failed"
    (request,) = receiver.delivered(path, timeout=60)
    view = signed_view(request)
    assert view["id"] == job["id"] and view["state"] == "failed"
    assert view["error"]["type"] == "delivery_limit"


def test_a_job_without_callback_url_calls_nobody(api, receiver, store):
    response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {"data": 5}})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert follow(api, job_id)[0]["state"] == "succeeded"
    time.sleep(1)
    assert store.get(callback_id(job_id, 0, "succeeded")) is None
