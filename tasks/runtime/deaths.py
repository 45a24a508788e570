"""Turning dead-lettered messages into failed jobs with a reason.

RabbitMQ dead-letters a message when a worker rejects it (the job failed)
or when its delivery limit is reached (it kept killing workers). In the
second case no worker ever said "failed", so every worker consumes the copy
that lands in ``taskplane.deaths`` and records the death on the job, then
indexes it under its queue's dead letters.
"""

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer, Message
from redis.exceptions import RedisError

from tasks.core import callbacks, workflows
from tasks.core.errors import Unavailable
from tasks.core.jobstore import text
from tasks.core.queues import deaths_queue

logger = logging.getLogger("taskplane.deaths")


def death_reason(headers: dict[str, Any]) -> tuple[str, str, int]:
    """(reason, original queue, times) from the newest ``x-death`` entry."""
    deaths = headers.get("x-death") or []
    latest = deaths[0] if deaths else {}
    reason = text(latest.get("reason")) or "unknown"
    queue = text(latest.get("queue")) or ""
    return reason, queue, int(latest.get("count") or 1)


def death_error(reason: str, record_error: dict | None, delivery_count: int | None) -> dict:
    """The error a client sees for a job that died this way."""
    if reason == "delivery_limit":
        return {
            "type": "delivery_limit",
            "exception": None,
            "message": "the job was delivered to workers too many times without finishing "
            "(it keeps crashing its worker); see 'worker' for the last one",
            "deliveries": delivery_count,
        }
    if record_error:
        return record_error
    return {
        "type": reason,
        "exception": None,
        "message": f"the message was dead-lettered by RabbitMQ ({reason})",
    }


def _deliveries(headers: dict[str, Any]) -> int | None:
    """How often a quorum queue delivered the message (its delivery limit counts these)."""
    count = headers.get("x-delivery-count")
    return int(count) + 1 if isinstance(count, int) else None


class DeathWatcher(bootsteps.ConsumerStep):
    """A kombu consumer in every worker, next to Celery's own task consumer."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.app = c.app

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # on_message gets the raw message: only headers are read, so a dead
        # letter with a body we cannot (or must not) decode cannot crash us.
        return [
            Consumer(
                channel, queues=[deaths_queue()], on_message=self.on_message, prefetch_count=10
            )
        ]

    def on_message(self, message: Message) -> None:
        try:
            self.on_death(message)
        except Exception:  # noqa: BLE001 - never let one odd notice stop the watcher
            logger.exception("unreadable dead-letter notice; dropping it")
            message.ack()

    def on_death(self, message: Message) -> None:
        headers = message.headers or {}
        job_id, job_type = headers.get("id"), headers.get("task")
        reason, queue, _ = death_reason(headers)
        if not job_id or not queue:
            logger.warning("dead letter without a job id or queue; dropping the notice")
            message.ack()
            return
        store = self.app.jobstore
        try:
            record = store.get(job_id) or {}
            error = death_error(reason, record.get("error"), _deliveries(headers))
            store.dead_lettered(job_id, job_type or "", queue, reason, error)
            if record.get("workflow"):  # a step that kept killing its worker fails its workflow
                workflows.step_failed(self.app, record["workflow"], error)
            if record.get("callback_url"):  # the same completion as the worker's: one callback
                callbacks.notify_final(self.app, store.get(job_id))
        except (RedisError, Unavailable) as exc:
            # Keep the notice; it comes back when storage does.
            logger.warning("could not record dead letter %s (%s); will retry", job_id, exc)
            message.requeue()
            return
        logger.error("job %s dead-lettered from %s: %s", job_id, queue, reason)
        message.ack()
