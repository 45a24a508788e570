"""tasks/core/broker_link: a broker that does not answer cannot hold a caller past its deadline.

The "broker" here is a local socket that accepts TCP and then says nothing (what a
frozen RabbitMQ looks like from outside: the kernel completes the handshake for it),
so these run without services. The real alarms and freezes are in
tests/chaos/test_broker_faults.py.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tasks.core.broker_link import BoundedConnection, BrokerAlarm, BrokerBlocked, connect
from tasks.core.publisher import JobPublisher
from tasks.factory import create_celery_app


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A port that accepts connections and never writes a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def app_for(port: int):  # noqa: ANN201 - TaskplaneCelery
    return create_celery_app(
        "testing", overrides={"broker_url": f"amqp://guest:guest@127.0.0.1:{port}//"}
    )


def test_connecting_to_a_broker_that_never_speaks_ends_at_the_deadline(silent_broker):
    app = app_for(silent_broker)
    started = time.monotonic()
    with pytest.raises(OSError):
        connect(app, started + 0.5)
    assert 0.4 < time.monotonic() - started < 1.0


def test_a_publish_to_a_silent_broker_answers_within_its_timeout(silent_broker):
    app = app_for(silent_broker)
    publisher = JobPublisher(app)
    message = publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    started = time.monotonic()
    with pytest.raises(OSError):
        publisher.publish([("diagnostics", message)], 0.9)
    # Both tries (2/3 of the time on the kept lane, the rest on a fresh one) fit in it.
    assert time.monotonic() - started < 1.2


def test_a_publish_is_refused_at_once_while_the_broker_is_known_blocked(silent_broker):
    app = app_for(silent_broker)
    alarm = BrokerAlarm()
    alarm.set("low on memory")
    publisher = JobPublisher(app, alarm)
    message = publisher.build(str(uuid.uuid4()), "diagnostics.echo", {}, {})
    started = time.monotonic()
    with pytest.raises(BrokerBlocked, match="low on memory"):
        publisher.publish([("diagnostics", message)], 5)
    assert time.monotonic() - started < 0.1


def test_an_alarm_is_cleared_only_by_news_newer_than_it():
    alarm = BrokerAlarm()
    before = time.time()
    alarm.set("low on disk")
    alarm.clear(seen_before=before)  # a probe that went through before the alarm began
    assert alarm.describe()["reason"] == "low on disk"
    alarm.clear(seen_before=time.time() + 1)
    assert alarm.describe() is None
    alarm.set("low on memory")
    alarm.clear()
    assert alarm.reason is None


def test_the_blocked_notice_keeps_rabbitmqs_reason_and_ends_the_wait():
    alarm = BrokerAlarm()
    connection = BoundedConnection(deadline=time.monotonic() + 1, alarm=alarm)
    connection._on_blocked(b"low on memory")  # noqa: SLF001 - what py-amqp dispatches
    assert connection.blocked_reason == "low on memory"
    assert alarm.reason == "low on memory"
    connection.raise_when_blocked = True
    with pytest.raises(BrokerBlocked):
        connection._on_blocked("low on memory")  # noqa: SLF001
    connection._on_unblocked()  # noqa: SLF001
    assert connection.blocked_reason is None
