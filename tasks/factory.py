"""Builds the Celery app that workers, Flower, the CLI and the web all share.

Nothing is built at import; ``tasks/celery.py`` calls the factory once for
``celery -A tasks`` and the web calls it from ``create_app``.
"""

from functools import cached_property
from typing import Any

from celery import Celery, bootsteps, signals

from config import config_module
from config.checks import platform_problems, refuse_if_any
from tasks.core.broker_link import BrokerAlarm, BrokerWatch
from tasks.core.forgetter import Forgetter
from tasks.core.http_client import build_http_client
from tasks.core.jobstore import JobStore, redis_client
from tasks.core.logging_setup import configure_logging
from tasks.core.publisher import JobPublisher
from tasks.core.queues import dead_letter_queues, deaths_queue, job_queues, queue_names
from tasks.core.registry import JobType, enabled_job_types
from tasks.core.schedules import ScheduleStore
from tasks.core.telemetry import instrument_worker_process
from tasks.core.workflows import WorkflowStore
from tasks.runtime.deaths import DeathWatcher
from tasks.runtime.retention import RetentionSweeper
from tasks.runtime.switches import apply_at_worker_start, apply_worker_group
from tasks.runtime.task import JobTask


class TaskplaneCelery(Celery):
    """Celery plus the two things every Taskplane process needs: the job types and the store."""

    @cached_property
    def job_types(self) -> dict[str, JobType]:
        return enabled_job_types(self.conf.taskplane_job_families)

    # Workers ride out short Redis blips; the web fails fast with a 503.
    patient_storage = True

    @cached_property
    def jobstore(self) -> JobStore:
        # redis-py resets its pool in a forked child, so this is fork-safe.
        client = redis_client(
            self.conf.result_backend,
            patient=self.patient_storage,
            timeout_s=float(self.conf.taskplane_redis_timeout_s),
        )
        return JobStore(client, int(self.conf.result_expires))

    @cached_property
    def retention_overrides(self) -> dict[str, int]:
        """Job types whose finished records are kept longer or shorter than result_expires
        (read once: Celery's settings lookups cost more than the rest of a submit's checks)."""
        default = int(self.conf.result_expires)
        overrides = self.conf.get("taskplane_retention_s") or {}
        return {name: int(s) for name, s in overrides.items() if int(s) != default}

    # Set in the web: a watch connection learns of RabbitMQ's alarms (see
    # tasks/core/broker_link) so submits answer 503 at once while one is on.
    watches_broker = False

    @cached_property
    def broker_alarm(self) -> BrokerAlarm:
        return BrokerAlarm()

    @cached_property
    def broker_watch(self) -> BrokerWatch:
        return BrokerWatch(self, self.broker_alarm)

    @cached_property
    def forgetter(self) -> Forgetter:
        """Removes the records of refused submissions, retrying while Redis does not answer."""
        return Forgetter(self.jobstore)

    @cached_property
    def schedules(self) -> ScheduleStore:
        """Schedules and what their fires left, in the job records' Redis."""
        return ScheduleStore(self.jobstore.redis)

    @cached_property
    def workflows(self) -> WorkflowStore:
        """Workflows: their steps, state and fan-in sets, next to the job records."""
        return WorkflowStore(self.jobstore.redis, int(self.conf.result_expires))

    @cached_property
    def http_client(self) -> Any:
        """The process's pooled outbound HTTP client (webhooks, log fetches).

        Built on first use, which is in the process running jobs: a prefork
        child builds its own rather than inheriting its parent's sockets.
        """
        return build_http_client()

    @cached_property
    def publisher(self) -> JobPublisher:
        """Confirmed, deadline-bounded publishing of job messages (submits and retries)."""
        watch = self.broker_watch if self.watches_broker else None
        return JobPublisher(self, self.broker_alarm, watch)


class DeclareDeadLetterQueues(bootsteps.StartStopStep):
    """Declares the dead-letter exchange and queues whenever a worker (re)connects.

    RabbitMQ drops a dead-lettered message whose target queue does not exist,
    so they must be there before the first job can fail.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Any) -> None:
        with c.app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in (*dead_letter_queues(c.app.job_types.values()), deaths_queue()):
                queue(channel).declare()


def create_celery_app(
    environment: str | None = None,
    overrides: dict[str, Any] | None = None,
    patient_storage: bool = True,
    watches_broker: bool = False,
) -> TaskplaneCelery:
    app = TaskplaneCelery("taskplane")
    app.patient_storage = patient_storage
    app.watches_broker = watches_broker
    app.config_from_object(config_module(environment))
    if overrides:
        app.conf.update(overrides)
    if app.conf.taskplane_environment == "production":
        refuse_if_any(platform_problems(app.conf))
    _declare_routing(app)
    for job_type in app.job_types.values():
        _register_job_task(app, job_type)
    # Workers import every handler at start, so a broken job module fails the
    # worker at once rather than at its first job. The web never imports them.
    app.conf.imports = sorted({jt.handler_module for jt in app.job_types.values()})
    apply_worker_group(app)
    signals.celeryd_after_setup.connect(
        apply_at_worker_start, weak=False, dispatch_uid="taskplane-consumer-switches"
    )
    app.steps["consumer"].add(DeclareDeadLetterQueues)
    app.steps["consumer"].add(DeathWatcher)
    app.steps["worker"].add(RetentionSweeper)
    json_lines = bool(app.conf.taskplane_log_json)

    def setup_logging(loglevel: Any = None, **_: Any) -> None:
        configure_logging(loglevel, json_lines=json_lines)

    signals.setup_logging.connect(setup_logging, weak=False, dispatch_uid="taskplane-logging")
    signals.worker_init.connect(_instrument, weak=False, dispatch_uid="taskplane-otel-main")
    signals.worker_process_init.connect(_instrument, weak=False, dispatch_uid="taskplane-otel")
    return app


def _declare_routing(app: TaskplaneCelery) -> None:
    job_types = list(app.job_types.values())
    queues = job_queues(job_types, int(app.conf.taskplane_delivery_limit))
    app.conf.task_queues = queues
    # Anything unrouted (Celery internals) goes to the first job queue, never to
    # an undeclared "celery" queue nobody consumes.
    app.conf.task_default_queue = queue_names(job_types)[0]
    app.conf.task_default_exchange = queues[0].exchange.name
    app.conf.task_default_exchange_type = "topic"
    app.conf.task_default_routing_key = queues[0].routing_key
    app.conf.task_routes = {jt.name: {"queue": jt.queue} for jt in job_types}


def _register_job_task(app: TaskplaneCelery, job_type: JobType) -> None:
    task_class = type(
        f"JobTask[{job_type.name}]",
        (JobTask,),
        {
            "name": job_type.name,
            "job_type": job_type,
            "time_limit": job_type.time_limit_s,
            "soft_time_limit": job_type.soft_time_limit_s,
            "__module__": __name__,
        },
    )
    app.register_task(task_class())


def _instrument(**_: Any) -> None:
    instrument_worker_process()
