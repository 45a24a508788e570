"""Jobs published by a producer other than our web (docs/message-format.md), with plain pika.

Every message here is built by ``task_message`` exactly as the document tells another
language to build it: no Celery, no kombu on the producing side. Messages that kill a
worker are sent to a platform of their own (own vhost, own Redis database, own worker and
web), so the session's worker survives them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from tests.integration.helpers import follow, submit
from tests.services import ROOT, Platform, RabbitMQ, RedisServer, wait_until

pytestmark = pytest.mark.integration

EXCHANGE = "taskplane"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
DOC: Path = ROOT / "docs" / "message-format.md"
DROP = object()  # a header value that means "leave this header out"


# -- the producer side, as docs/message-format.md describes it -------------------------


def task_message(
    job_type: str, job_id: str, payload: Any, **headers: Any
) -> tuple[pika.BasicProperties, bytes]:
    """(properties, body) of a Celery protocol-2 task message for one Taskplane job."""
    all_headers = {
        "lang": "py",
        "task": job_type,
        "id": job_id,
        "root_id": job_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "(<payload>,)",
        "kwargsrepr": "{}",
        "origin": "foreign-producer-test@" + os.uname().nodename,
        "ignore_result": True,
        **headers,
    }
    properties = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        correlation_id=job_id,
        headers={k: v for k, v in all_headers.items() if v is not DROP},
    )
    body = json.dumps([[payload], {}, EMBED]).encode()
    return properties, body


def publish(
    channel: BlockingChannel,
    routing_key: str,
    properties: pika.BasicProperties,
    body: bytes,
    mandatory: bool = True,
) -> None:
    """Publish and return once RabbitMQ confirmed it (raises if it did not, or could not route)."""
    channel.basic_publish(EXCHANGE, routing_key, body, properties, mandatory=mandatory)


def open_channel(url: str) -> tuple[pika.BlockingConnection, BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    return connection, channel


# -- reading what the platform made of it -----------------------------------------------


def job_when_recorded(api: httpx.Client, job_id: str, timeout: float = 20) -> dict:
    """The job once a worker created its record (it is 404 until then), then until final."""

    def recorded() -> bool:
        response = api.get(f"/jobs/{job_id}")
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200

    wait_until(recorded, timeout, 0.05, what=f"a record of job {job_id}")
    job, _ = follow(api, job_id)
    return job


def dead_item(api: httpx.Client, queue: str, job_id: str) -> dict | None:
    response = api.get(f"/queues/{queue}/dead", params={"limit": 500})
    assert response.status_code == 200, response.text
    return next((item for item in response.json()["items"] if item["id"] == job_id), None)


def wait_dead(api: httpx.Client, queue: str, job_id: str, timeout: float = 20) -> dict:
    return wait_until(  # type: ignore[return-value]
        lambda: dead_item(api, queue, job_id),
        timeout,
        0.1,
        what=f"job {job_id} among the dead letters of {queue}",
    )


def json_lines(process) -> list[dict]:  # noqa: ANN001 - tests.services.Process
    return process.json_lines()


def log_lines(process: Any, *needles: str) -> list[dict]:
    """The worker's JSON log lines whose message contains every needle."""
    return [
        line
        for line in json_lines(process)
        if all(needle in line.get("message", "") for needle in needles)
    ]


def ready_count(channel: BlockingChannel, queue: str) -> int:
    """Messages ready in ``queue`` now (a passive declare: exact, unlike the management API)."""
    return channel.queue_declare(queue, passive=True).method.message_count


def assert_worker_answers(api: httpx.Client) -> None:
    job, _ = follow(api, submit(api, "diagnostics.echo", {"data": "still here"})["id"])
    assert job["state"] == "succeeded" and job["result"] == {"data": "still here"}, job


@pytest.fixture()
def channel(platform: Platform, worker: Any) -> Iterator[BlockingChannel]:
    """A confirm-mode channel on the session's vhost; the worker declared the topology."""
    connection, channel = open_channel(platform.env["CELERY_BROKER_URL"])
    try:
        yield channel
    finally:
        connection.close()


# -- 1. a valid job ------------------------------------------------------------------------


def test_a_job_published_with_pika_runs_and_gets_a_record(api, channel, worker):
    job_id = str(uuid.uuid4())
    data = {"from": "a Go service", "n": [1, 2.5, None, True]}
    traceparent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    properties, body = task_message(
        "diagnostics.echo", job_id, {"data": data}, traceparent=traceparent
    )
    publish(channel, "diagnostics", properties, body)

    job = job_when_recorded(api, job_id)
    assert job["state"] == "succeeded", job
    assert job["result"] == {"data": data}
    assert job["attempts"] == 1
    assert job["type"] == "diagnostics.echo" and job["queue"] == "diagnostics"
    assert job["worker"] == worker.node
    # The worker created the record on first delivery: it never was "queued".
    assert job["created_at"] == job["started_at"]

    # The traceparent header joined the producer's trace: every worker line of the job has it.
    lines = wait_until(
        lambda: [line for line in json_lines(worker) if line.get("job_id") == job_id],
        10,
        0.2,
        what="worker log lines of the job",
    )
    assert {line["trace_id"] for line in lines} == {TRACE_ID}

    # Publishing the same job id again (a publish retried after a lost confirm) does not
    # run it again: the worker acks the copy because the job already finished.
    publish(channel, "diagnostics", properties, body)
    wait_until(
        lambda: log_lines(worker, f"job {job_id} is succeeded; not running it"),
        10,
        0.1,
        what="the worker to drop the second copy",
    )
    again = api.get(f"/jobs/{job_id}").json()
    assert again["attempts"] == 1 and again["finished_at"] == job["finished_at"], again


def test_a_foreign_job_retries_by_its_job_type_policy_in_its_trace(api, channel, worker):
    job_id = str(uuid.uuid4())
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    properties, body = task_message(
        "diagnostics.fail", job_id, {"times": 1}, traceparent=traceparent
    )
    publish(channel, "diagnostics", properties, body)
    job = job_when_recorded(api, job_id)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and job["result"] == {"failed_attempts": 1}

    def both_attempts() -> list[dict] | None:
        lines = [line for line in json_lines(worker) if line.get("job_id") == job_id]
        return lines if {line.get("attempt") for line in lines} >= {1, 2} else None

    lines = wait_until(both_attempts, 10, 0.2, what="worker log lines of both attempts")
    assert {line["trace_id"] for line in lines} == {TRACE_ID}


def test_task_and_id_are_the_only_headers_a_worker_needs(api, channel):
    job_id = str(uuid.uuid4())
    optional = (
        "lang root_id parent_id group retries eta expires timelimit argsrepr kwargsrepr "
        "origin ignore_result"
    ).split()
    properties, body = task_message(
        "diagnostics.echo", job_id, {"data": "bare"}, **dict.fromkeys(optional, DROP)
    )
    assert set(properties.headers) == {"task", "id"}
    publish(channel, "diagnostics", properties, body)
    job = job_when_recorded(api, job_id)
    assert job["state"] == "succeeded" and job["result"] == {"data": "bare"}, job


def test_the_documented_python_example_runs(api, platform, web_url, worker, tmp_path):
    text = DOC.read_text()
    section = text.split("## Example: Python with pika", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "publish_job.py"
    script.write_text(code)
    traceparent = f"00-{TRACE_ID}-c0ffee0ba902b7aa-01"
    env = {
        **platform.env,
        "TASKPLANE_AMQP_URL": platform.env["CELERY_BROKER_URL"],
        "TASKPLANE_URL": web_url,
        "TRACEPARENT": traceparent,
    }
    payload = json.dumps({"data": {"via": "the documented example"}})
    done = subprocess.run(
        [sys.executable, str(script), "diagnostics.echo", payload],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert str(uuid.UUID(job_id)) == job_id
    job = job_when_recorded(api, job_id)
    assert job["state"] == "succeeded", job
    assert job["result"] == {"data": {"via": "the documented example"}}
    lines = wait_until(
        lambda: [line for line in json_lines(worker) if line.get("job_id") == job_id],
        10,
        0.2,
        what="worker log lines of the job",
    )
    assert {line["trace_id"] for line in lines} == {TRACE_ID}


# -- 2. an invalid payload -----------------------------------------------------------------


def test_an_invalid_payload_fails_at_once_and_is_dead_lettered(api, channel):
    job_id = str(uuid.uuid4())
    payload = {"url": "ftp://x", "body": {"event": "signup"}}
    publish(channel, "webhooks", *task_message("webhook.deliver", job_id, payload))

    job = job_when_recorded(api, job_id)
    assert job["state"] == "failed", job
    assert job["attempts"] == 1
    assert job["error"]["type"] == "invalid_payload"
    assert job["error"]["exception"] == "ValidationError"
    assert job["error"]["message"].startswith("url:"), job["error"]

    dead = wait_dead(api, "webhooks", job_id)
    assert dead["reason"] == "rejected"
    assert dead["type"] == "webhook.deliver"
    assert dead["attempts"] == 1
    assert dead["error"]["type"] == "invalid_payload"
    assert dead["error"]["message"] == job["error"]["message"]


# -- 3. an unknown job type ----------------------------------------------------------------


def test_an_unknown_job_type_is_rejected_and_dead_lettered(api, channel, worker):
    job_id = str(uuid.uuid4())
    publish(channel, "diagnostics", *task_message("nope.nothing", job_id, {"data": 1}))

    dead = wait_dead(api, "diagnostics", job_id)
    assert dead["reason"] == "rejected"
    assert dead["type"] == "nope.nothing"
    assert dead["attempts"] == 0 and dead["worker"] is None  # it never ran
    assert dead["error"]["type"] == "rejected", dead

    job = api.get(f"/jobs/{job_id}").json()
    assert job["state"] == "failed" and job["dead_reason"] == "rejected", job
    assert job["type"] == "nope.nothing" and job["queue"] == "diagnostics"

    # Refused once (Celery's on_unknown_task rejects without requeue), never redelivered.
    time.sleep(1)
    refusals = log_lines(worker, "Received unregistered task of type 'nope.nothing'", job_id)
    assert len(refusals) == 1 and refusals[0]["level"] == "ERROR", refusals
    assert ready_count(channel, "diagnostics") == 0
    assert worker.alive()


# -- 4. a body that is not JSON --------------------------------------------------------------


def test_a_body_that_is_not_json_is_dead_lettered_without_logging_it(api, channel, worker):
    job_id = str(uuid.uuid4())
    properties, _ = task_message("diagnostics.echo", job_id, {"data": 1})
    publish(channel, "diagnostics", properties, b"not json: secret-payload")

    refusals = wait_until(
        lambda: log_lines(worker, "undecodable message", job_id),
        10,
        0.1,
        what="the worker to refuse the message",
    )
    assert refusals[0]["level"] == "ERROR"
    assert not log_lines(worker, "secret-payload", "")  # the body is never logged
    assert worker.alive()
    assert_worker_answers(api)
    dead = wait_until(
        lambda: dead_item(api, "diagnostics", job_id),
        20,
        0.2,
        what="the undecodable message among the dead letters",
    )
    assert dead["reason"] == "rejected"
    assert ready_count(channel, "diagnostics") == 0  # consumed, not looping


# -- what a producer must not do, and what it may ------------------------------------------


def test_the_recorded_header_is_for_our_web_only(api, channel, worker):
    """``taskplane_recorded`` means "the web wrote a record first": without one, dropped."""
    job_id = str(uuid.uuid4())
    properties, body = task_message(
        "diagnostics.echo", job_id, {"data": 1}, taskplane_recorded=True
    )
    publish(channel, "diagnostics", properties, body)
    wait_until(
        lambda: log_lines(worker, f"job {job_id} is abandoned; not running it"),
        10,
        0.1,
        what="the worker to drop the job",
    )
    assert api.get(f"/jobs/{job_id}").status_code == 404
    assert dead_item(api, "diagnostics", job_id) is None


def test_a_publish_the_broker_cannot_route_is_refused_or_lost(rabbitmq: RabbitMQ, channel):
    properties, body = task_message("diagnostics.echo", str(uuid.uuid4()), {"data": 1})
    # A routing key no queue is bound to, with mandatory: returned, so pika raises.
    with pytest.raises(UnroutableError):
        publish(channel, "diagnostic", properties, body)
    # Without mandatory the broker confirms it and drops it: nothing tells the producer.
    publish(channel, "diagnostic", properties, body, mandatory=False)

    # A vhost where no worker ever ran has no "taskplane" exchange: the channel is closed.
    vhost = f"taskplane-test-empty-{uuid.uuid4().hex[:8]}"
    url = rabbitmq.create_vhost(vhost)
    try:
        connection, empty = open_channel(url)
        try:
            with pytest.raises(ChannelClosedByBroker) as closed:
                publish(empty, "diagnostics", properties, body)
            assert closed.value.reply_code == 404
            assert "no exchange 'taskplane'" in closed.value.reply_text
        finally:
            connection.close()
    finally:
        rabbitmq.delete_vhost(vhost)


def test_an_eta_is_honoured_but_holds_a_worker_slot_until_due(api, channel, worker):
    """Why a producer should publish when due: a future ``eta`` waits inside the worker.

    The session worker runs 2 processes, so it takes at most 2 unacked messages per queue
    (quorum queues: the prefetch is static). Two jobs with an eta fill both; an immediate
    job submitted meanwhile waits until they are due.
    """
    due = datetime.now(UTC) + timedelta(seconds=4)
    eta = due.isoformat()
    ids = [str(uuid.uuid4()) for _ in range(2)]
    for job_id in ids:
        publish(
            channel, "diagnostics", *task_message("diagnostics.echo", job_id, {"data": 1}, eta=eta)
        )
    wait_until(
        lambda: all(log_lines(worker, f"[{job_id}] received") for job_id in ids),
        5,
        0.05,
        what="the worker to hold both eta jobs",
    )
    # Waiting inside the worker: no record yet (a foreign job has one only once it starts).
    assert all(api.get(f"/jobs/{job_id}").status_code == 404 for job_id in ids)

    blocked = submit(api, "diagnostics.echo", {"data": "immediate"})
    done, _ = follow(api, blocked["id"])
    assert done["state"] == "succeeded"
    assert datetime.fromisoformat(done["started_at"]) >= due - timedelta(seconds=0.5), done

    for job_id in ids:
        job = job_when_recorded(api, job_id)
        assert job["state"] == "succeeded" and job["attempts"] == 1
        assert datetime.fromisoformat(job["started_at"]) >= due - timedelta(seconds=0.5), job


# -- platform gaps: messages that harm workers or vanish (each on a platform of its own) ---


@dataclass
class OwnPlatform:
    api: httpx.Client
    worker: Any
    channel: BlockingChannel


@pytest.fixture()
def own_platform(
    rabbitmq: RabbitMQ, platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnPlatform]:
    """A worker and a web on a vhost and Redis database of their own, thrown away after."""
    vhost = f"taskplane-test-foreign-{uuid.uuid4().hex[:8]}"
    url = rabbitmq.create_vhost(vhost)
    redis_server = RedisServer()
    _, redis_url = redis_server.claim_database(owner=f"pytest-foreign-{os.getpid()}")
    env = {**platform.env, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": redis_url}
    own = Platform(env=env, log_dir=tmp_path_factory.mktemp("foreign-platform"))
    try:
        worker = own.start_worker(f"foreign-{uuid.uuid4().hex[:6]}")
        _, base = own.start_web()
        connection, channel = open_channel(url)
        try:
            with httpx.Client(base_url=base, timeout=10) as api:
                yield OwnPlatform(api, worker, channel)
        finally:
            connection.close()
    finally:
        own.stop_all()
        rabbitmq.delete_vhost(vhost)
        redis_server.release_database(redis_url)


def _survives(worker: Any, seconds: float = 5) -> bool:
    """Whether the worker is still running ``seconds`` after a message reached it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not worker.alive():
            return False
        time.sleep(0.1)
    return True


def _death_note(worker: Any) -> str:
    lines = [line["message"] for line in json_lines(worker) if line["level"] == "CRITICAL"]
    return "worker died: " + " | ".join(lines)[-500:]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(json.dumps({"data": 1}).encode(), {}, id="payload-alone"),
        pytest.param(json.dumps([[{"data": 1}], {}]).encode(), {}, id="two-elements"),
        pytest.param(None, {"id": DROP}, id="no-id-header"),
    ],
)
def test_a_message_celery_cannot_parse_does_not_kill_the_worker(own_platform, body, headers):
    own = own_platform
    job_id = str(uuid.uuid4())
    properties, v2_body = task_message("diagnostics.echo", job_id, {"data": 1}, **headers)
    publish(own.channel, "diagnostics", properties, body or v2_body)
    assert _survives(own.worker), _death_note(own.worker)
    assert_worker_answers(own.api)


def test_a_message_with_another_content_type_does_not_kill_the_workers(own_platform):
    own = own_platform
    job_id = str(uuid.uuid4())
    properties, body = task_message("diagnostics.echo", job_id, {"data": 1})
    properties.content_type = "text/plain"
    publish(own.channel, "diagnostics", properties, body)
    assert _survives(own.worker), _death_note(own.worker)
    assert wait_dead(own.api, "diagnostics", job_id)["reason"] == "rejected"
    assert_worker_answers(own.api)


def test_a_body_that_is_not_json_is_dead_lettered(own_platform):
    own = own_platform
    job_id = str(uuid.uuid4())
    properties, _ = task_message("diagnostics.echo", job_id, {"data": 1})
    publish(own.channel, "diagnostics", properties, b"not json")
    assert wait_dead(own.api, "diagnostics", job_id, timeout=10)
    assert own.worker.alive()
