"""Operating dead letters: list, replay, purge. Used by the HTTP API and the CLI.

The messages themselves stay in RabbitMQ (``<queue>.dead``); Redis keeps an
index (newest first) and the job records, so listing is cheap and paged
while the payload never leaves the broker. Replay goes through the submission core
(tasks/core/submission.py, ``replay``): it resets the record (keeping the
previous run in ``history``) and republishes the original message with the
same id to its queue with a publisher confirm; only then is the dead copy acked.
"""

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import amqp
from kombu import Connection, Message

from tasks.core.errors import Unavailable, unavailable_as_one_error
from tasks.core.queues import dead_letter_queue, dead_letter_queue_name
from tasks.core.submission import replacement_message, replay

logger = logging.getLogger("taskplane.deadletters")
# How long a replay of a job that just failed waits for its dead letter.
DEAD_LETTER_WAIT_S = 5.0
DEAD_LETTER_POLL_S = 0.1
# Headers RabbitMQ adds when dead-lettering; a replayed message starts clean.
_DEATH_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


@unavailable_as_one_error
def list_dead(app: Any, queue: str, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    store = app.jobstore
    ids = store.dead_ids(queue, offset, limit)
    items = []
    for job_id, record in zip(ids, store.get_many(ids), strict=True):
        record = record or {"id": job_id}
        items.append(
            {
                "id": job_id,
                "type": record.get("type"),
                "reason": record.get("dead_reason"),
                "error": record.get("error"),
                "attempts": record.get("attempts", 0),
                "worker": record.get("worker"),
                "died_at": record.get("dead_lettered_at"),
            }
        )
    return {
        "queue": queue,
        "total": store.dead_count(queue),
        "offset": offset,
        "limit": limit,
        "items": items,
    }


@unavailable_as_one_error
def replay_dead(
    app: Any,
    queue: str,
    job_ids: list[str] | None = None,
    payloads: Mapping[str, dict[str, Any]] | None = None,
) -> ReplayReport:
    """Replay the listed jobs (all when None) from ``<queue>.dead`` back to ``queue``.

    A job in ``payloads`` runs again with that (already validated) payload
    instead of its dead letter's.
    """
    wanted = None if job_ids is None else set(job_ids)
    report = ReplayReport()
    with app.connection_for_write() as conn:
        for message in _drain(conn, queue):
            job_id = (message.headers or {}).get("id")
            if wanted is not None and job_id not in wanted:
                continue  # left unacked: returns to the dead-letter queue on close
            _replay_one(app, queue, job_id, message, (payloads or {}).get(job_id))
            report.replayed.append(job_id)
    if wanted is not None:
        report.not_found = sorted(wanted - set(report.replayed))
    return report


def replay_dead_waiting(
    app: Any,
    queue: str,
    job_ids: list[str],
    payloads: Mapping[str, dict[str, Any]] | None = None,
) -> ReplayReport:
    """``replay_dead`` for jobs just failed: waits up to ``DEAD_LETTER_WAIT_S`` for late ones.

    A job is recorded failed a moment before its worker rejects the message
    into the dead-letter queue, so a replay right after the failure may find no
    dead letter yet. ``not_found`` are the ids whose dead letter never came
    (an operator purged it); what to do then is the caller's.
    """
    deadline = time.monotonic() + DEAD_LETTER_WAIT_S
    report = ReplayReport(not_found=list(job_ids))
    while True:
        got = replay_dead(app, queue, report.not_found, payloads)
        report.replayed += got.replayed
        report.not_found = got.not_found
        if not report.not_found or time.monotonic() >= deadline:
            return report
        time.sleep(DEAD_LETTER_POLL_S)


@unavailable_as_one_error
def purge_dead(app: Any, queue: str, job_ids: list[str] | None = None) -> int:
    """Drop dead letters for good (all when ``job_ids`` is None); returns how many."""
    with app.connection_for_write() as conn:
        if job_ids is None:
            channel = conn.default_channel
            dead_letter_queue(queue)(channel).declare()
            purged = channel.queue_purge(dead_letter_queue_name(queue)) or 0
            app.jobstore.redis.delete(app.jobstore.dead_key(queue))
            return int(purged)
        wanted, purged = set(job_ids), []
        for message in _drain(conn, queue):
            job_id = (message.headers or {}).get("id")
            if job_id in wanted:
                message.ack()
                purged.append(job_id)
        app.jobstore.forget_dead(queue, purged)
        return len(purged)


def _drain(conn: Connection, queue: str):  # noqa: ANN202 - generator of kombu Messages
    """Every message now in the dead-letter queue, unacked, on one channel.

    Messages not acked by the caller go back to the queue when the channel
    closes at the end of the ``with`` block that owns the connection.
    """
    channel = conn.channel()
    bound = dead_letter_queue(queue)(channel)
    bound.declare()
    _, total, _ = channel.queue_declare(dead_letter_queue_name(queue), passive=True)
    try:
        for _ in range(total):
            message = bound.get(no_ack=False, accept=["json"])
            if message is None:
                break
            yield message
    finally:
        channel.close()


def _replay_one(
    app: Any, queue: str, job_id: str, message: Message, payload: dict[str, Any] | None = None
) -> None:
    """Through the submission core: the record reset, the message confirmed, then the ack."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in _DEATH_HEADERS}
    headers["retries"] = 0
    properties = message.properties or {}
    note = {"payload_digest": payload_digest(_payload_of(message))}
    job_type = app.job_types.get(headers.get("task", ""))
    if payload is not None and job_type is not None:
        resent = replacement_message(app, job_id, job_type, payload)
        note["payload_replaced"] = True
    else:
        resent = amqp.Message(
            message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            application_headers=headers,
            delivery_mode=2,
            correlation_id=properties.get("correlation_id", job_id),
            reply_to=properties.get("reply_to"),
        )
    try:
        replay(app, job_id, queue, resent, note)
    except Unavailable:
        # Not confirmed: put the job back among the dead, message unacked.
        store = app.jobstore
        record = store.get(job_id) or {}
        store.dead_lettered(
            job_id,
            record.get("type", ""),
            queue,
            "replay_failed",
            {
                "type": "replay_failed",
                "exception": None,
                "message": "the replay was not confirmed by the broker",
            },
        )
        raise
    message.ack()
    logger.info("replayed job %s to %s", job_id, queue)


def payload_digest(payload: Any) -> str | None:
    """What history keeps of a run's payload: its digest, never the payload itself."""
    if payload is None:
        return None
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _payload_of(message: Message) -> Any:
    """The payload of a protocol-2 task message: the first positional argument."""
    try:
        args = json.loads(message.body)[0]
        return args[0] if args else None
    except (ValueError, TypeError, IndexError, KeyError):
        return None
