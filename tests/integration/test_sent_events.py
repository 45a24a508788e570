"""The web's ``task-sent`` events, as Celery's own event receiver (and so Flower) reads them."""

import threading

import pytest
from celery.events import EventReceiver
from kombu import Connection

from tasks.factory import create_celery_app
from tests.services import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture()
def sent_events(session_vhost):
    """Collect task-sent events on the session vhost while the test runs."""
    app = create_celery_app("testing", overrides={"broker_url": session_vhost[1]})
    seen: dict[str, dict] = {}
    ready = threading.Event()
    with Connection(session_vhost[1]) as connection:
        receiver = EventReceiver(
            connection,
            handlers={"task-sent": lambda event: seen.setdefault(event["uuid"], event)},
            app=app,
        )

        def capture() -> None:
            for _ in receiver.itercapture(limit=None, timeout=None, wakeup=False):
                ready.set()

        thread = threading.Thread(target=capture, daemon=True)
        thread.start()
        assert ready.wait(10), "the event receiver did not start"
        yield seen
        receiver.should_stop = True
        thread.join(10)


def test_single_and_batch_submits_announce_each_job_as_sent(api, sent_events):
    single = api.post("/jobs", json={"type": "diagnostics.echo", "payload": {"data": 1}})
    assert single.status_code == 202, single.text
    batch = api.post(
        "/jobs/batch",
        json={"jobs": [{"type": "diagnostics.echo", "payload": {"data": n}} for n in range(3)]},
    )
    assert batch.status_code == 202, batch.text
    ids = [single.json()["id"], *(job["id"] for job in batch.json()["jobs"])]
    wait_until(lambda: set(ids) <= set(sent_events), 15, what="task-sent for every job")
    for job_id in ids:
        event = sent_events[job_id]
        assert event["name"] == "diagnostics.echo"
        assert event["queue"] == "diagnostics" and event["exchange"] == "taskplane"
        assert event["hostname"] and event["clock"] > 0 and event["timestamp"] > 0
    assert "{'data': 1}" in sent_events[ids[0]]["args"]
