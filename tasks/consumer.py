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
"""

import logging
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

logger = logging.getLogger("taskplane.consumer")
# What building a request from a malformed message raises (unpacking the body,
# a missing header), as opposed to connection errors, which Celery handles.
MALFORMED = (ValueError, KeyError, TypeError, IndexError, AttributeError)


class TaskplaneConsumer(Consumer):
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
        return self.ensure_connected(
            self.app.connection_for_write(
                url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
            )
        )
