"""The job-type registry: the one list both the web and the workers read.

A job type is declared once, here: its name, payload model, queue, retry
policy and time limit. The web validates and routes with it; the worker
registers one Celery task per entry. Handlers are named by dotted path and
imported only by workers, so the web never loads job implementations.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery.utils.imports import symbol_by_name
from pydantic import BaseModel

from tasks.core.retry import RetryPolicy
from tasks.jobs.diagnostics.schema import (
    CrashPayload,
    EchoPayload,
    FailPayload,
    SleepPayload,
    SumPayload,
)
from tasks.jobs.logs.schema import LogsPayload
from tasks.jobs.mail.schema import EmailPayload
from tasks.jobs.webhooks.schema import WebhookPayload

# RabbitMQ closes the channel of a consumer that holds a message longer than
# this (deploy/rabbitmq/taskplane.conf); a job must finish well within it.
RABBITMQ_CONSUMER_TIMEOUT_S = 1800


@dataclass(frozen=True)
class JobType:
    name: str
    family: str
    queue: str
    payload_model: type[BaseModel]
    handler: str
    retry: RetryPolicy
    time_limit_s: float
    description: str
    needs_result: bool = True
    # Payload fields holding URLs the job connects to: checked against the
    # environment's URL policy (tasks/core/netpolicy) by web and worker.
    url_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if "." not in self.name:
            raise ValueError(f"job type {self.name!r} must be namespaced, like 'email.send'")
        if not 0 < self.time_limit_s < RABBITMQ_CONSUMER_TIMEOUT_S:
            raise ValueError(
                f"{self.name}: time limit {self.time_limit_s}s must be below RabbitMQ's "
                f"consumer timeout ({RABBITMQ_CONSUMER_TIMEOUT_S}s) or the broker kills the channel"
            )

    @property
    def soft_time_limit_s(self) -> float:
        """Raised inside the job first, so it can stop cleanly before the hard kill."""
        return max(self.time_limit_s - max(1.0, self.time_limit_s * 0.1), self.time_limit_s * 0.5)

    @cached_property
    def payload_schema(self) -> dict[str, Any]:
        return self.payload_model.model_json_schema(by_alias=True)

    def load_handler(self) -> Any:
        """Import the implementation. Only workers call this."""
        return symbol_by_name(self.handler)

    @property
    def handler_module(self) -> str:
        return self.handler.partition(":")[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "queue": self.queue,
            "payload_schema": self.payload_schema,
            "retry": self.retry.as_dict(),
            "time_limit_s": self.time_limit_s,
            "needs_result": self.needs_result,
        }


JOB_TYPES: tuple[JobType, ...] = (
    JobType(
        name="webhook.deliver",
        family="webhooks",
        queue="webhooks",
        payload_model=WebhookPayload,
        handler="tasks.jobs.webhooks.deliver:deliver",
        retry=RetryPolicy(max_attempts=8, backoff_base_s=2, backoff_cap_s=600),
        time_limit_s=90,
        description="POST a JSON body to a URL; 5xx, 408, 429 and network errors retry.",
        url_fields=("url",),
    ),
    JobType(
        name="email.send",
        family="email",
        queue="email",
        payload_model=EmailPayload,
        handler="tasks.jobs.mail.send:send",
        retry=RetryPolicy(max_attempts=6, backoff_base_s=5, backoff_cap_s=900),
        time_limit_s=120,
        description="Send a message over SMTP; 4xx replies and lost connections retry.",
    ),
    JobType(
        name="logs.summarize",
        family="logs",
        queue="logs",
        payload_model=LogsPayload,
        handler="tasks.jobs.logs.job:summarize_log",
        retry=RetryPolicy(max_attempts=3, backoff_base_s=5, backoff_cap_s=120),
        time_limit_s=600,
        description="Stream a plain-text or JSON-lines log; count levels and top errors.",
        url_fields=("url",),
    ),
    JobType(
        name="diagnostics.echo",
        family="diagnostics",
        queue="diagnostics",
        payload_model=EchoPayload,
        handler="tasks.jobs.diagnostics.jobs:echo",
        retry=RetryPolicy(max_attempts=1, backoff_base_s=1, backoff_cap_s=1),
        time_limit_s=30,
        description="Return the payload's data. For tests and benchmarks.",
    ),
    JobType(
        name="diagnostics.sum",
        family="diagnostics",
        queue="diagnostics",
        payload_model=SumPayload,
        handler="tasks.jobs.diagnostics.jobs:sum_values",
        retry=RetryPolicy(max_attempts=1, backoff_base_s=1, backoff_cap_s=1),
        time_limit_s=30,
        description="Add up a list of numbers. For workflow tests and benchmarks.",
    ),
    JobType(
        name="diagnostics.sleep",
        family="diagnostics",
        queue="diagnostics",
        payload_model=SleepPayload,
        handler="tasks.jobs.diagnostics.jobs:sleep",
        retry=RetryPolicy(max_attempts=3, backoff_base_s=1, backoff_cap_s=10),
        time_limit_s=660,
        description="Sleep for the given seconds.",
    ),
    JobType(
        name="diagnostics.fail",
        family="diagnostics",
        queue="diagnostics",
        payload_model=FailPayload,
        handler="tasks.jobs.diagnostics.jobs:fail",
        retry=RetryPolicy(max_attempts=5, backoff_base_s=1, backoff_cap_s=10),
        time_limit_s=30,
        description="Fail N times (or always, or permanently), then succeed.",
    ),
    JobType(
        name="diagnostics.crash",
        family="diagnostics",
        queue="diagnostics",
        payload_model=CrashPayload,
        handler="tasks.jobs.diagnostics.jobs:crash",
        retry=RetryPolicy(max_attempts=1, backoff_base_s=1, backoff_cap_s=1),
        time_limit_s=30,
        description="Kill the worker process running it (N times, or always).",
    ),
)


def enabled_job_types(families: Iterable[str]) -> dict[str, JobType]:
    """The job types of the enabled families, by name, in registry order."""
    wanted = set(families)
    unknown = wanted - {jt.family for jt in JOB_TYPES}
    if unknown:
        raise ValueError(f"unknown job families in configuration: {sorted(unknown)}")
    return {jt.name: jt for jt in JOB_TYPES if jt.family in wanted}
