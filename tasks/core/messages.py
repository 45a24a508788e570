"""The message contract: what a job message carries beyond Celery's protocol 2.

Job messages are ordinary Celery protocol-2 task messages (JSON, the job
type as the task name, the payload as the only positional argument), so the
celery CLI and Flower read them as they read any task. Taskplane adds two
headers and one routing rule; docs/message-format.md describes them for
producers written in any language. Publisher, task shell and tests read the
contract from here, nowhere else.
"""

from typing import Any

from kombu.transport.native_delayed_delivery import calculate_routing_key

from tasks.core.queues import JOB_EXCHANGE

# The submission core wrote the job's record before publishing: a message that
# carries this and finds no record was given up by its producer (it answered
# 503 and removed the record), so it must not run. A message without it comes
# from another producer, and the worker creates the record.
RECORDED_HEADER = "taskplane_recorded"
# The message continues a run this job already started (a retry after job
# storage failed): it may take the job over from the "started" state instead of
# being dropped as a duplicate copy.
TAKEOVER_HEADER = "taskplane_takeover"
# Celery's native delayed delivery: a countdown message enters here and passes
# down binary levels of TTL queues to its queue (kombu computes the key).
DELAYED_EXCHANGE = "celery_delayed_27"


def job_headers(*, recorded: bool = True, takeover: bool = False) -> dict[str, bool]:
    """The Taskplane headers of a message the platform publishes."""
    headers = {RECORDED_HEADER: True} if recorded else {}
    if takeover:
        headers[TAKEOVER_HEADER] = True
    return headers


def is_recorded(request: Any) -> bool:
    """Whether a running task's message says its record was written first."""
    return bool(getattr(request, RECORDED_HEADER, False))


def takes_over(request: Any) -> bool:
    """A redelivered message (its holder died) or our own continuation may resume a run."""
    delivery = request.delivery_info or {}
    return bool(delivery.get("redelivered") or getattr(request, TAKEOVER_HEADER, False))


def route(queue: str, countdown: int | None = None) -> tuple[str, str]:
    """(exchange, routing key) of a job message for ``queue``, delayed by ``countdown`` s."""
    if countdown:
        return DELAYED_EXCHANGE, calculate_routing_key(countdown, queue)
    return JOB_EXCHANGE.name, queue
