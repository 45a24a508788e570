"""Exchange and queue declarations, derived from the registry.

Job queues are durable quorum queues on a topic exchange:
- quorum: replicated in a cluster, and they carry a delivery limit, so a
  message that keeps killing workers stops instead of looping forever;
- topic: Celery's native delayed delivery (countdowns, retries) only works on
  non-direct exchanges; with a direct exchange a countdown job blocks a worker
  process until it is due (measured: an immediate job waited 6 s behind one).
Every job queue dead-letters through one topic exchange into ``<queue>.dead``
(kept until an operator replays or purges it) and, as a copy, into
``taskplane.deaths``, which workers consume to mark the job failed with the
reason, including deaths the broker decides alone (the delivery limit).
"""

from collections.abc import Iterable

from kombu import Exchange, Queue

from tasks.core.registry import JobType

JOB_EXCHANGE = Exchange("taskplane", type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("taskplane.dead", type="topic", durable=True)
DEATHS_QUEUE_NAME = "taskplane.deaths"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dead"


def queue_names(job_types: Iterable[JobType]) -> list[str]:
    """Queue names in registry order, each once."""
    return list(dict.fromkeys(jt.queue for jt in job_types))


def job_queue(name: str, delivery_limit: int) -> Queue:
    return Queue(
        name,
        exchange=JOB_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
            "x-dead-letter-routing-key": name,
        },
    )


def dead_letter_queue(name: str) -> Queue:
    return Queue(
        dead_letter_queue_name(name),
        exchange=DEAD_LETTER_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def deaths_queue() -> Queue:
    return Queue(
        DEATHS_QUEUE_NAME,
        exchange=DEAD_LETTER_EXCHANGE,
        routing_key="#",
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def job_queues(job_types: Iterable[JobType], delivery_limit: int) -> tuple[Queue, ...]:
    return tuple(job_queue(name, delivery_limit) for name in queue_names(job_types))


def dead_letter_queues(job_types: Iterable[JobType]) -> tuple[Queue, ...]:
    return tuple(dead_letter_queue(name) for name in queue_names(job_types))
