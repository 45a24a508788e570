"""``task-sent`` events, batched per process and published by one background thread.

Why: publishing each submit's ``task-sent`` event right after its confirm cost
one more AMQP publish per request (JSON, a frame, a socket write), on the
request's thread. Flower only needs to see the events, soon; so a submit
queues its events here (in memory, never waiting) and one daemon thread per
process sends what is queued every ``FLUSH_INTERVAL_S`` or once
``FLUSH_AT`` are waiting, as one ``task.multi`` list (as Celery's own
dispatcher sends buffered task events; Flower and Celery's ``EventReceiver``
unpack it), on its own connection, unconfirmed.

Events stay best effort and never cost a submit anything but a lock taken for
an append: the queue is bounded (a full queue drops, counted and logged);
while the broker is down, blocked (a memory or disk alarm) or slow, the thread
drops what it cannot send rather than wait, and every broker wait of the
thread ends by a deadline (tasks/core/broker_link). A fork starts its own
thread (the pid check), as the publisher's lanes do; at exit, what is queued
is flushed if the broker takes it within ``EXIT_FLUSH_S``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from copy import copy
from typing import Any

import amqp
from amqp import spec
from celery.events.event import event_exchange
from kombu.serialization import dumps

from tasks.core.broker_link import BoundedConnection, BrokerAlarm, connect

logger = logging.getLogger("taskplane.publisher")

FLUSH_INTERVAL_S = 0.05
FLUSH_AT = 256
MAX_QUEUED = 10_000
# Connecting, declaring the exchange and each write end by these.
CONNECT_TIMEOUT_S = 2.0
WRITE_TIMEOUT_S = 1.0
# After a failure, no new connection for this long (events meanwhile are dropped).
RETRY_AFTER_S = 1.0
EXIT_FLUSH_S = 0.5
DROP_LOG_EVERY_S = 10.0
PUBLISH_ARGS = "Bssbb"  # Basic.Publish: ticket, exchange, routing key, mandatory, immediate


class SentEvents:
    """One process's queue of ``task-sent`` events and the thread that publishes them."""

    def __init__(self, app: Any, alarm: BrokerAlarm, hostname: str):
        self.app = app
        self.alarm = alarm
        self.hostname = hostname
        self.exchange = app.conf.event_exchange
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pid: int | None = None
        self._queued: list[dict[str, Any]] = []
        self._stopping = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        reset = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := reset()) and method())
        self.dropped = 0  # events lost: queue full, broker down or blocked
        self.published = 0  # event messages published (each one or more events)
        self._dropped_logged_at = 0.0
        self._count_lock = threading.Lock()

    def put(self, events: list[dict[str, Any]]) -> None:
        """Queue events for the thread; never waits on the broker, never raises for it."""
        if not events:
            return
        self._ensure_started()
        with self._lock:
            room = max(MAX_QUEUED - len(self._queued), 0)
            if room < len(events):
                self._count_dropped(len(events) - room, "the event queue is full")
                events = events[:room]
            was_empty = not self._queued
            self._queued.extend(events)
            if was_empty or len(self._queued) >= FLUSH_AT:
                self._wake.notify()

    def close(self, timeout_s: float = EXIT_FLUSH_S) -> None:
        """Ask the thread to send what is queued and stop; waits at most ``timeout_s``."""
        if self._pid != os.getpid() or self._thread is None:
            return
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._stopped.wait(timeout_s)

    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._thread = threading.Thread(
                target=self._run, name="taskplane-sent-events", daemon=True
            )
            # The thread must never take a process-directed signal: a worker child
            # holds SIGTERM and the soft time limit back while it records an
            # effect (tasks/runtime/effects.deferred_signals), and the kernel would
            # hand such a signal to any thread that does not block it, whose
            # handler then runs in the main thread at once. A new thread
            # inherits the mask of the thread that starts it.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            try:
                self._thread.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            atexit.register(self.close)
            self._pid = os.getpid()

    def _after_fork(self) -> None:
        """In a forked child (one thread): nothing of the parent's queue, locks or thread."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queued, self._stopping = [], False
        self._stopped = threading.Event()
        self._pid = self._thread = None
        self._count_lock = threading.Lock()

    def _next_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """Wait for an event, then up to ``FLUSH_INTERVAL_S`` for more; (events, stopping)."""
        with self._lock:
            while not self._queued and not self._stopping:
                self._wake.wait()
            flush_at = time.monotonic() + FLUSH_INTERVAL_S
            while len(self._queued) < FLUSH_AT and not self._stopping:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            events, self._queued = self._queued, []
            return events, self._stopping

    def _run(self) -> None:
        link = _Link()
        while True:
            events, stopping = self._next_batch()
            try:
                self._publish(link, events)
            except Exception:  # the thread must outlive anything; submits never wait on it
                logger.exception("task-sent events thread: unexpected error")
            if stopping:
                link.drop()
                self._stopped.set()
                return

    def _publish(self, link: _Link, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        if time.monotonic() < link.retry_at:
            self._count_dropped(len(events), "the broker was unavailable just now")
            return
        try:
            link.connection, link.channel = self._send(link.connection, link.channel, events)
        except Exception as exc:  # noqa: BLE001 - events are optional; jobs are not
            self._count_dropped(len(events), f"not published: {exc!r}")
            link.drop()
            link.retry_at = time.monotonic() + RETRY_AFTER_S

    def _send(
        self,
        connection: BoundedConnection | None,
        channel: amqp.Channel | None,
        events: list[dict[str, Any]],
    ) -> tuple[BoundedConnection, amqp.Channel]:
        """Publish ``events`` as one message; (re)connects first if needed."""
        if self.alarm.reason is not None or (
            connection is not None and connection.blocked_reason is not None
        ):
            raise ConnectionError(f"the broker blocks publishers: {self.alarm.reason}")
        if connection is None or channel is None:
            connection, channel = self._connect()
        body, routing_key = (events[0], "task.sent") if len(events) == 1 else (events, "task.multi")
        content_type, encoding, data = dumps(body, serializer="json")
        connection.bound(time.monotonic() + WRITE_TIMEOUT_S)
        channel.send_method(
            spec.Basic.Publish,
            PUBLISH_ARGS,
            (0, self.exchange, routing_key, False, False),
            amqp.Message(
                data,
                content_type=content_type,
                content_encoding=encoding,
                application_headers={"hostname": self.hostname},
                delivery_mode=1,
            ),
        )
        self.published += 1
        return connection, channel

    def _connect(self) -> tuple[BoundedConnection, amqp.Channel]:
        connection = connect(self.app, time.monotonic() + CONNECT_TIMEOUT_S, alarm=self.alarm)
        try:
            channel = connection.channel()
            # Celery's event exchange, as celery.events.event.get_exchange makes it.
            entity = copy(event_exchange)
            entity.name = self.exchange
            entity(channel).declare()
        except BaseException:
            connection.abort()
            raise
        return connection, channel

    def _count_dropped(self, count: int, why: str) -> None:
        """Count lost events and log them, at most every ``DROP_LOG_EVERY_S``."""
        with self._count_lock:
            self.dropped += count
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROP_LOG_EVERY_S:
            self._dropped_logged_at = now
            logger.warning(
                "dropped %d task-sent event(s) (%s); %d dropped so far in this process",
                count,
                why,
                self.dropped,
            )


class _Link:
    """The events thread's connection and channel, and when it may connect again."""

    def __init__(self) -> None:
        self.connection: BoundedConnection | None = None
        self.channel: amqp.Channel | None = None
        self.retry_at = 0.0

    def drop(self) -> None:
        """Close the socket; never waits for the broker."""
        if self.connection is not None:
            self.connection.abort()
        self.connection = self.channel = None
