"""The web's publishing paths under concurrency: ``task-sent`` events, batched per process.

A real gunicorn web and worker (tests/conftest.py); a raw kombu consumer bound
to Celery's event exchange counts the event *messages* as well as the events
they carry, so the test sees both that each job is announced exactly once with
its fields and that the web sent them in batches (``task.multi``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Queue

from tasks.core.broker_link import BrokerAlarm
from tasks.core.sent_events import MAX_QUEUED, SentEvents
from tasks.factory import create_celery_app
from tests.services import free_port, wait_until

pytestmark = pytest.mark.integration

SUBMITS = 240
CONCURRENCY = 16


class EventTap:
    """Every message on the event exchange's task routing keys, as it arrived."""

    def __init__(self, url: str):
        self.url = url
        self.messages: list[tuple[str, Any]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        exchange = Exchange("celeryev", type="topic", durable=True, auto_delete=False)
        queue = Queue(
            f"test-tap-{uuid.uuid4().hex[:8]}",
            exchange,
            routing_key="task.#",
            exclusive=True,
            auto_delete=True,
            durable=False,
            queue_arguments={"x-queue-type": "classic"},
        )
        with Connection(self.url) as connection:
            with Consumer(connection, [queue], callbacks=[self._on], accept=["json"]):
                self.ready.set()
                while not self.stop.is_set():
                    try:
                        connection.drain_events(timeout=0.2)
                    except TimeoutError:
                        continue

    def _on(self, body: Any, message: Any) -> None:
        self.messages.append((message.delivery_info["routing_key"], body))
        message.ack()

    def events(self) -> list[dict]:
        """The events, a task.multi message unpacked as Flower unpacks it."""
        return [
            event
            for _, body in self.messages
            for event in (body if isinstance(body, list) else [body])
            if event.get("type") == "task-sent"
        ]


@pytest.fixture()
def tap(session_vhost):
    tap = EventTap(session_vhost[1])
    tap.thread.start()
    assert tap.ready.wait(10), "the event tap did not start"
    yield tap
    tap.stop.set()
    tap.thread.join(10)


def test_concurrent_submits_are_announced_once_each_in_batches(api, tap):
    def submit(n: int) -> str:
        response = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {"data": n}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        ids = list(pool.map(submit, range(SUBMITS)))
    assert len(set(ids)) == SUBMITS

    def announced() -> bool:
        return set(ids) <= {event["uuid"] for event in tap.events()}

    wait_until(announced, 15, what="a task-sent event for every job")
    ours = [event for event in tap.events() if event["uuid"] in set(ids)]
    counts = Counter(event["uuid"] for event in ours)
    assert set(counts.values()) == {1}, [job for job, n in counts.items() if n > 1]
    for n, job_id in enumerate(ids):
        event = next(e for e in ours if e["uuid"] == job_id)
        assert event["name"] == "diagnostics.echo"
        assert event["queue"] == "diagnostics" and event["routing_key"] == "diagnostics"
        assert event["exchange"] == "taskplane"
        assert event["root_id"] == job_id and event["parent_id"] is None
        assert event["args"] == f"({{'data': {n}}},)" and event["kwargs"] == "{}"
        assert event["retries"] == 0 and event["eta"] is None and event["expires"] is None
        assert event["hostname"].startswith("gen") and event["pid"] > 0
        assert event["clock"] > 0 and event["timestamp"] > 0 and "utcoffset" in event
    carrying = [body for _, body in tap.messages if any(_mentions(body, job) for job in ids)]
    assert len(carrying) < SUBMITS / 2, f"{len(carrying)} event messages for {SUBMITS} jobs"
    assert any(key == "task.multi" for key, _ in tap.messages)


def test_a_batch_and_a_delayed_job_are_announced_with_their_fields(api, tap):
    batch = api.post(
        "/jobs/batch",
        json={"jobs": [{"type": "diagnostics.echo", "payload": {"data": n}} for n in range(50)]},
    )
    assert batch.status_code == 202, batch.text
    delayed = api.post(
        "/jobs", json={"type": "diagnostics.echo", "payload": {"data": "later"}, "delay_s": 30}
    )
    assert delayed.status_code == 202, delayed.text
    ids = [job["id"] for job in batch.json()["jobs"]] + [delayed.json()["id"]]
    wait_until(lambda: set(ids) <= {e["uuid"] for e in tap.events()}, 15, what="task-sent for each")
    events = {e["uuid"]: e for e in tap.events() if e["uuid"] in set(ids)}
    assert [events[job_id]["args"] for job_id in ids[:50]] == [
        f"({{'data': {n}}},)" for n in range(50)
    ]
    assert events[ids[-1]]["eta"] is not None  # as Celery announces a countdown
    assert all(events[job_id]["eta"] is None for job_id in ids[:50])


def _mentions(body: Any, job_id: str) -> bool:
    events = body if isinstance(body, list) else [body]
    return any(event.get("uuid") == job_id for event in events)


def test_events_never_hold_a_submit_when_the_broker_is_gone_or_blocked(session_vhost):
    """Queueing is an append: with no broker, or one blocking publishers, events are
    dropped and counted, and the queue stays bounded."""
    dead = create_celery_app(
        "testing", overrides={"broker_url": f"amqp://guest:guest@127.0.0.1:{free_port()}//"}
    )
    events = SentEvents(dead, BrokerAlarm(), "gen1@test")
    started = time.monotonic()
    for n in range(MAX_QUEUED // 100 * 3):
        events.put([{"type": "task-sent", "uuid": f"{n}-{i}"} for i in range(100)])
    assert time.monotonic() - started < 1.0
    wait_until(lambda: events.dropped >= MAX_QUEUED, 10, what="the events to be dropped")
    assert len(events._queued) <= MAX_QUEUED  # noqa: SLF001

    blocked = BrokerAlarm()
    blocked.set("low on memory")
    live = create_celery_app("testing", overrides={"broker_url": session_vhost[1]})
    events = SentEvents(live, blocked, "gen1@test")
    events.put([{"type": "task-sent", "uuid": "x"}])
    wait_until(lambda: events.dropped == 1, 5, what="the event to be dropped while blocked")
    assert events.published == 0
    blocked.clear()
    time.sleep(1.1)  # past the pause after a failure
    events.put([{"type": "task-sent", "uuid": "y"}])
    wait_until(lambda: events.published == 1, 5, what="events to flow again")
    events.close()
