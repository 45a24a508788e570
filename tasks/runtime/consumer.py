"""The worker's message consumer, hardened against messages it cannot run.

Jobs can come from producers other than the web. Stock Celery acknowledges
(drops) a message whose body does not decode, after logging the whole body,
and exits the worker on a JSON body that is not a protocol-2 task message
(the message then kills every worker in turn until the queue's delivery
limit stops it). Here both are rejected without requeue, so RabbitMQ
dead-letters them and the job shows up as failed among its queue's dead
letters, and only the headers are logged.

Its event connection publishes without confirms: events (task-received,
-started, -succeeded, worker heartbeats) are transient monitoring data, and
waiting for a confirm of each one blocked the consumer loop three times per
job (profiled with py-spy: most of a no-op job's time in the worker).

While RabbitMQ blocks publishers (a memory or disk alarm), it stops reading
the event connection; events written then would fill the socket's buffers
and, once full, stop the consumer loop (acks, new deliveries) until the alarm
ends. So when the broker says ``connection.blocked`` the worker stops sending
events, and a small thread waits for ``connection.unblocked`` to resume them:
events are lost for the alarm's duration, jobs are not. While blocked, the
consumer loop never touches the event connection (no flush), and the waiting
thread holds the dispatcher's lock only while it reads, with a pause between
reads: a thread that re-takes a lock at once can starve another that waits for
it (CPython's locks are not fair), and the consumer loop waits on that lock
when Celery closes the dispatcher on a reconnect.

Celery's worker buffers task events and flushes the buffer on the next turn
of its event loop, which at a few hundred jobs a second is one AMQP publish
per job or more: a third of the consumer process's time (py-spy, README
"Benchmark"), and the consumer process is what limits a prefork worker. Here
the buffer is flushed at most every ``EVENT_FLUSH_S`` or when it holds
``EVENT_BUFFER_LIMIT`` events, still as Celery's own ``task.multi`` lists:
Flower sees each event at most that much later.
"""

import logging
import threading
import time
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

logger = logging.getLogger("taskplane.consumer")
# What building a request from a malformed message raises (unpacking the body,
# a missing header), as opposed to connection errors, which Celery handles.
MALFORMED = (ValueError, KeyError, TypeError, IndexError, AttributeError)
UNBLOCK_POLL_S = 0.5
UNBLOCK_PAUSE_S = 0.05  # between two reads, the dispatcher's lock is free this long
EVENT_FLUSH_S = 0.1
EVENT_BUFFER_LIMIT = 256


class TaskplaneConsumer(Consumer):
    _event_flush_due = False
    _events_blocked = False

    def on_send_event_buffered(self) -> None:
        """Flush buffered task events within ``EVENT_FLUSH_S``, not on the next loop turn."""
        if not self.hub:
            return
        dispatcher = self.event_dispatcher
        if dispatcher is not None and dispatcher.buffer_limit < EVENT_BUFFER_LIMIT:
            dispatcher.buffer_limit = EVENT_BUFFER_LIMIT  # a new dispatcher after a reconnect
        if not self._event_flush_due:
            self._event_flush_due = True
            self.hub.call_later(EVENT_FLUSH_S, self._flush_events_due)

    def _flush_events_due(self) -> None:
        self._event_flush_due = False
        if self._events_blocked:
            return  # never write to a connection the broker stopped reading
        self._flush_events()

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        logger.error(
            "undecodable message %s (%s, %s): %s; dead-lettering it",
            (message.headers or {}).get("id"),
            message.content_type,
            message.content_encoding,
            exc,
        )
        message.reject(requeue=False)

    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except MALFORMED as exc:
                logger.error(
                    "malformed task message %s: %r; dead-lettering it",
                    (getattr(message, "headers", None) or {}).get("id"),
                    exc,
                )
                message.reject(requeue=False)
                return None

        return on_task_received

    def connection_for_write(self, url: Any = None, heartbeat: Any = None) -> Any:
        """The connection Celery's event dispatcher uses (its only caller)."""
        options = {
            "confirm_publish": False,
            # py-amqp calls these when it reads the broker's notices (it reads
            # before every publish).
            "on_blocked": self._on_events_blocked,
            "on_unblocked": self._on_events_unblocked,
        }
        return self.ensure_connected(
            self.app.connection_for_write(url=url, heartbeat=heartbeat, transport_options=options)
        )

    def _on_events_blocked(self, reason: str = "") -> None:
        dispatcher = getattr(self, "event_dispatcher", None)
        if dispatcher is None or not dispatcher.enabled:
            return
        logger.warning("broker blocks publishers (%s); task events paused", reason)
        dispatcher.enabled = False
        self._events_blocked = True
        threading.Thread(
            target=self._await_events_unblocked,
            args=(dispatcher,),
            name="taskplane-events-unblock",
            daemon=True,
        ).start()

    def _on_events_unblocked(self) -> None:
        self._events_blocked = False

    def _await_events_unblocked(self, dispatcher: Any) -> None:
        """Read the event connection until the broker lets it publish again."""
        while self._events_blocked and dispatcher is getattr(self, "event_dispatcher", None):
            # The open AMQP connection, never kombu's auto-connecting property:
            # a reconnect here would happen under the dispatcher's lock.
            connection = getattr(dispatcher.connection, "_connection", None)
            if connection is None:
                break
            with dispatcher.mutex:  # the dispatcher's own lock around its connection
                try:
                    connection.drain_events(timeout=UNBLOCK_POLL_S)
                except TimeoutError:
                    pass
                except Exception as exc:  # noqa: BLE001 - a broken connection: Celery reconnects
                    logger.info("event connection failed while blocked: %r", exc)
                    break
            time.sleep(UNBLOCK_PAUSE_S)
        self._events_blocked = False
        if dispatcher is getattr(self, "event_dispatcher", None):
            dispatcher.enabled = True
            logger.warning("broker accepts publishes again; task events resumed")
