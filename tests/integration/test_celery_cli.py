"""The celery CLI, run as the README documents it, against the session's live worker.

Every inspect/control call names the worker with ``-d <node>``: a broadcast waits
out its whole timeout for replies (~1.6 s a call), a destination returns as soon
as that node answered (~0.6 s, mostly the CLI's own start-up).

``control cancel_consumer``/``add_consumer`` answer *before* the worker acts (the
worker schedules the change with ``call_soon``), so the tests wait until
``inspect active_queues`` shows the change before relying on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.integration.helpers import follow, submit
from tests.services import ROOT, VENV_BIN, Platform, wait_until

pytestmark = pytest.mark.integration

JOB_TYPE_NAMES = {
    "webhook.deliver",
    "email.send",
    "logs.summarize",
    "diagnostics.echo",
    "diagnostics.sum",
    "diagnostics.sleep",
    "diagnostics.fail",
    "diagnostics.crash",
}
QUEUES = ["webhooks", "email", "logs", "diagnostics"]


def celery(platform: Platform, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """``celery -A tasks <args>`` from the project directory, with the platform's environment."""
    result = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "tasks", *args],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"celery {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def inspect_json(platform: Platform, node: str, command: str) -> object:
    """``celery -A tasks inspect <command> -d <node> --json``: the node's part of the reply."""
    out = celery(platform, "inspect", command, "-d", node, "--json").stdout
    reply = json.loads(out)
    assert list(reply) == [node], out
    return reply[node]


def consumed_queues(platform: Platform, node: str) -> list[str]:
    return [queue["name"] for queue in inspect_json(platform, node, "active_queues")]


def add_consumer(platform: Platform, node: str, queue: str) -> None:
    out = celery(platform, "control", "add_consumer", queue, "-d", node).stdout
    assert f"add consumer {queue}" in out, out
    wait_until(
        lambda: queue in consumed_queues(platform, node),
        15,
        0.2,
        what=f"{node} to consume {queue} again",
    )


@contextmanager
def consumer_cancelled(platform: Platform, node: str, queue: str) -> Iterator[None]:
    """The worker stops consuming ``queue`` inside the block; it always consumes it again after.

    Other tests share this worker, so the consumer is re-added even when the block fails.
    """
    try:
        out = celery(platform, "control", "cancel_consumer", queue, "-d", node).stdout
        assert re.search(rf"^->\s+{re.escape(node)}: OK$", out, re.M), out
        assert f"no longer consuming from {queue}" in out, out
        wait_until(
            lambda: queue not in consumed_queues(platform, node),
            15,
            0.2,
            what=f"{node} to stop consuming {queue}",
        )
        yield
    finally:
        add_consumer(platform, node, queue)


def state(api, job_id: str) -> str:  # noqa: ANN001 - httpx.Client
    return api.get(f"/jobs/{job_id}").json()["state"]


def stays(api, job_ids: list[str], expected: str, seconds: float) -> None:  # noqa: ANN001
    """Every job keeps state ``expected`` for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = {job_id: state(api, job_id) for job_id in job_ids}
        assert set(states.values()) == {expected}, states
        time.sleep(0.2)


def test_status_lists_the_worker_as_ok(platform, worker):
    out = celery(platform, "status").stdout
    assert re.search(rf"^->\s+{re.escape(worker.node)}: OK$", out, re.M), out
    assert re.search(r"^\d+ nodes? online\.$", out, re.M), out


def test_inspect_ping_answers_pong(platform, worker):
    out = celery(platform, "inspect", "ping", "-d", worker.node).stdout
    assert re.search(rf"^->\s+{re.escape(worker.node)}: OK\n\s+pong$", out, re.M), out
    assert "1 node online." in out, out
    assert inspect_json(platform, worker.node, "ping") == {"ok": "pong"}


def test_inspect_ping_of_an_unknown_node_fails(platform, worker):
    """The -d tests above could not pass against a worker that does not answer."""
    result = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "tasks", "inspect", "ping", "-d", "nobody@nowhere"],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # EX_UNAVAILABLE
    assert result.returncode == 69, (result.returncode, result.stdout, result.stderr)
    assert "No nodes replied within time constraint" in result.stderr + result.stdout


def test_inspect_registered_lists_every_job_type(platform, worker):
    out = celery(platform, "inspect", "registered", "-d", worker.node).stdout
    assert re.search(rf"^->\s+{re.escape(worker.node)}: OK$", out, re.M), out
    listed = set(re.findall(r"^\s+\* (\S+)$", out, re.M))
    assert listed == JOB_TYPE_NAMES, out
    assert set(inspect_json(platform, worker.node, "registered")) == JOB_TYPE_NAMES


def test_inspect_stats_reports_the_pool_and_the_broker(platform, worker, session_vhost):
    stats = inspect_json(platform, worker.node, "stats")
    pool = stats["pool"]
    assert pool["implementation"] == "celery.concurrency.prefork:TaskPool", pool
    assert pool["max-concurrency"] == 2, pool  # Platform.start_worker's default -c 2
    assert len(pool["processes"]) == 2, pool
    assert pool["max-tasks-per-child"] == 10_000, pool
    # worker_prefetch_multiplier = 1: one unacked message per pool process.
    assert stats["prefetch_count"] == 2, stats
    assert stats["pid"] == worker.pid, stats
    assert stats["broker"]["transport"] == "amqp", stats["broker"]
    assert stats["broker"]["virtual_host"] == session_vhost[0], stats["broker"]


def test_inspect_active_queues_lists_the_four_quorum_queues(platform, worker):
    queues = inspect_json(platform, worker.node, "active_queues")
    assert [queue["name"] for queue in queues] == QUEUES, queues
    for queue in queues:
        assert queue["queue_arguments"]["x-queue-type"] == "quorum", queue
        assert queue["queue_arguments"]["x-delivery-limit"] == 5, queue
        assert queue["queue_arguments"]["x-dead-letter-exchange"] == "taskplane.dead", queue
        assert queue["exchange"]["name"] == "taskplane", queue
        assert queue["exchange"]["type"] == "topic", queue
        assert queue["routing_key"] == queue["name"], queue
        assert queue["durable"] is True, queue


def test_inspect_active_shows_a_running_job(platform, worker, api):
    # Long enough to outlast the three CLI calls below on a loaded machine.
    job = submit(api, "diagnostics.sleep", {"seconds": 6})
    wait_until(lambda: state(api, job["id"]) == "started", 15, 0.05, what="the job to start")
    active = inspect_json(platform, worker.node, "active")
    assert [task["id"] for task in active] == [job["id"]], active
    task = active[0]
    assert task["name"] == "diagnostics.sleep", task
    assert task["args"] == [{"seconds": 6}], task
    assert task["hostname"] == worker.node, task
    assert task["delivery_info"]["exchange"] == "taskplane", task
    assert task["delivery_info"]["routing_key"] == "diagnostics", task
    # task_acks_late: the message stays unacknowledged while the job runs.
    assert task["acknowledged"] is False, task
    assert task["worker_pid"] in inspect_json(platform, worker.node, "stats")["pool"]["processes"]

    # Seen started above; on a loaded machine the CLI calls may outlast the job.
    final, _ = follow(api, job["id"])
    assert final["state"] == "succeeded", final
    assert final["result"] == {"slept_s": 6}, final
    assert inspect_json(platform, worker.node, "active") == []


def test_cancel_consumer_pauses_a_queue_and_add_consumer_resumes_it(
    platform, worker, api, rabbitmq, session_vhost
):
    with consumer_cancelled(platform, worker.node, "diagnostics"):
        assert consumed_queues(platform, worker.node) == ["webhooks", "email", "logs"]
        waiting = submit(api, "diagnostics.echo", {"data": "held back"})
        other = submit(api, "logs.summarize", {"lines": ["x"]})
        stays(api, [waiting["id"]], "queued", 2.0)
        # Other queues are still consumed.
        done, _ = follow(api, other["id"])
        assert done["state"] == "succeeded", done
        assert state(api, waiting["id"]) == "queued"

        # add_consumer needs only the queue name: the queue is in the app's
        # task_queues, so the worker reuses that declaration (quorum, topic
        # exchange "taskplane", dead-lettering), not the CLI's direct default.
        add_consumer(platform, worker.node, "diagnostics")
        readded = next(
            queue
            for queue in inspect_json(platform, worker.node, "active_queues")
            if queue["name"] == "diagnostics"
        )
        assert readded["queue_arguments"]["x-queue-type"] == "quorum", readded
        assert readded["exchange"]["name"] == "taskplane", readded
        assert readded["exchange"]["type"] == "topic", readded
        assert state(api, waiting["id"]) in {"queued", "started", "succeeded"}
        final, _ = follow(api, waiting["id"])
        assert final["state"] == "succeeded", final
        assert final["result"] == {"data": "held back"}, final
        assert final["worker"] == worker.node, final

    # The broker still holds one quorum queue, not a redeclared classic one.
    assert rabbitmq.queue(session_vhost[0], "diagnostics")["type"] == "quorum"
    assert consumed_queues(platform, worker.node) == QUEUES


def test_purge_empties_a_queue(platform, worker, api):
    with consumer_cancelled(platform, worker.node, "logs"):
        jobs = [submit(api, "logs.summarize", {"lines": ["x"]}) for _ in range(3)]
        ids = [job["id"] for job in jobs]
        # submit() got a 202, so RabbitMQ confirmed the three messages are in "logs".
        out = celery(platform, "purge", "-Q", "logs", "-f").stdout
        assert out.strip() == "Purged 3 messages from 1 known task queue.", out
        out = celery(platform, "purge", "-Q", "logs", "-f").stdout
        assert out.strip() == "No messages purged from 1 queue.", out

    # The worker consumes "logs" again, and none of the purged jobs ever runs.
    assert "logs" in consumed_queues(platform, worker.node)
    stays(api, ids, "queued", 3.0)

    # Known limitation: purge removes the broker's messages, not the jobs'
    # records in Redis, so the API keeps showing purged jobs as "queued"
    # forever. Cancelling them through the API closes their records.
    for job_id in ids:
        response = api.delete(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled", response.text
