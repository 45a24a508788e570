"""The base class of every job task: the thin shell around a plain handler.

It records the job's state, validates the payload, calls the handler and maps
what the handler raised to a retry or a failure, per the job type's policy.
Exceptions are never swallowed: a failure is re-raised so Celery rejects the
message and RabbitMQ dead-letters it.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from pydantic import ValidationError
from redis.exceptions import RedisError

from tasks.core import callbacks, workflows
from tasks.core.errors import EffectInProgress, PermanentError, TransientError, Unavailable
from tasks.core.jobstore import FINAL_STATES, rfc3339
from tasks.core.messages import is_recorded, takes_over
from tasks.core.submission import PUBLISH_ERRORS, publish_retry
from tasks.runtime.effects import JobContext

if TYPE_CHECKING:
    from tasks.core.registry import JobType

# While storage is down, a job waits in the broker and comes back this often.
STORAGE_RETRY_CAP_S = 30

logger = logging.getLogger("taskplane.job")


class JobTask(Task):
    job_type: "JobType"
    acks_late = True
    reject_on_worker_lost = True
    # Taskplane counts attempts itself (every execution, redeliveries too).
    max_retries = None
    typing = False

    def run(self, payload: Any = None) -> Any:
        try:
            return self._run(payload)
        except RedisError as exc:
            # Job storage is unreachable (even after the client's own retries):
            # keep the job as a message in the broker and come back later. This
            # is not an attempt of the job, so it does not spend its budget.
            delay = min(STORAGE_RETRY_CAP_S, 2 ** min(self.request.retries or 0, 5))
            logger.warning(
                "job storage unavailable (%s); job %s back in %ss", exc, self.request.id, delay
            )
            raise self._publish_retry(payload, exc, delay, takeover=True) from exc

    def _publish_retry(
        self, payload: Any, exc: BaseException, delay: int, takeover: bool = False
    ) -> BaseException:
        """Publish the job's next run in ``delay`` s; return what to raise.

        Celery's own ``retry()`` waits for the confirm without a bound, so a
        blocked broker (a memory alarm) would hold the worker's slot as long
        as the alarm lasts. Here the retry goes through the submission
        core's publisher: confirmed within ``taskplane_retry_publish_timeout_s``,
        waiting through a block meanwhile, while this job's own message stays
        unacked. Confirmed: ``Retry`` (Celery acks the message and reports
        the retry). Not confirmed: ``Reject(requeue=True)``, so the message
        goes back to its queue and nothing is lost.
        """
        try:
            publish_retry(
                self.app,
                self.request.id,
                self.job_type,
                payload,
                countdown=delay,
                retries=(self.request.retries or 0) + 1,
                takeover=takeover,
            )
        except PUBLISH_ERRORS as publish_error:
            logger.warning(
                "could not publish the retry of job %s (%r); returning its message to the queue",
                self.request.id,
                publish_error,
            )
            return Reject(publish_error, requeue=True)
        return Retry(exc=exc, when=delay)

    def _run(self, payload: Any) -> Any:
        job_id = self.request.id
        outcome = self.app.jobstore.start(
            job_id,
            self.name,
            self.job_type.queue,
            self.request.hostname or "",
            recorded=is_recorded(self.request),
            takeover=takes_over(self.request),
        )
        if not outcome.proceed:
            # Cancelled before it ran, a redelivery of a job that already
            # finished (its effect happened), or a publish the web gave up on:
            # acknowledge and do nothing, but tell its workflow again (the run
            # that finished it may have died before it could).
            logger.info("job %s is %s; not running it", job_id, outcome.state)
            if outcome.workflow and outcome.state == "succeeded":
                self._advance(outcome.workflow)
            elif outcome.workflow and outcome.state == "failed":
                record = self.app.jobstore.get(job_id) or {}
                workflows.step_failed(self.app, outcome.workflow, record.get("error"))
            if outcome.state in FINAL_STATES and outcome.callback_url:
                self._notify(payload)  # again: the run that finished it may have died first
            raise Ignore()
        self.request.taskplane_attempt = outcome.attempt  # for log lines
        self.request.taskplane_workflow = outcome.workflow
        self.request.taskplane_callback_url = outcome.callback_url
        context = JobContext(
            job_id=job_id,
            attempt=outcome.attempt,
            settings=self.app.conf,
            store=self.app.jobstore,
            lease_s=float(self.app.conf.taskplane_effect_lease_s),
            http=self._http_client,
        )
        try:
            model = self.job_type.payload_model.model_validate(payload)
            result = self.job_type.load_handler()(model, context)
        except (Retry, RedisError):
            raise
        except Exception as exc:
            raise self._retry_or_fail(exc, context, payload) from exc
        self.app.jobstore.succeeded(job_id, result if self.job_type.needs_result else None)
        if outcome.workflow:
            self._advance(outcome.workflow)  # before the message is acked
        if outcome.callback_url:
            self._notify(payload)  # before the message is acked
        return result

    def _http_client(self) -> Any:
        return self.app.http_client

    def _advance(self, step: str) -> None:
        """Start the workflow steps this one made ready; on failure the message comes back.

        The job stays succeeded; its redelivery finds it so and advances again
        (deterministic step ids: nothing is created twice).
        """
        try:
            workflows.step_succeeded(self.app, step)
        except workflows.WorkflowNotFound:
            logger.warning("job %s: its workflow is gone", self.request.id)
        except (Unavailable, *PUBLISH_ERRORS) as exc:
            logger.warning("job %s: could not advance its workflow (%s)", self.request.id, exc)
            raise Reject(exc, requeue=True) from exc

    def _notify(self, payload: Any) -> None:
        """Submit the finished job's completion callback (tasks/core/callbacks.py).

        Not taken (the broker or Redis is out): the job stays finished and
        this message is published again with a storage-outage backoff (or,
        that failing too, returned to its queue); its next delivery finds the
        job finished and notifies again (one callback job per completion:
        its id is deterministic). A new message rather than a requeue, so an
        outage does not spend the message's delivery limit.
        """
        try:
            callbacks.notify_final(self.app, self.app.jobstore.get(self.request.id))
        except (Unavailable, RedisError, *PUBLISH_ERRORS) as exc:
            delay = min(STORAGE_RETRY_CAP_S, 2 ** min(self.request.retries or 0, 5))
            logger.warning(
                "job %s: could not submit its completion callback (%s); again in %ss",
                self.request.id,
                exc,
                delay,
            )
            raise self._publish_retry(payload, exc, delay, takeover=True) from exc

    def _retry_or_fail(self, exc: Exception, context: JobContext, payload: Any) -> BaseException:
        """Record the outcome and return what to raise: a Retry or the error itself."""
        error = describe_error(exc, context.attempt)
        delay = self._retry_delay(exc, context.attempt)
        if delay is not None:
            due = datetime.now(UTC) + timedelta(seconds=delay)
            self.app.jobstore.retrying(context.job_id, error, rfc3339(due))
            logger.warning(
                "job %s attempt %s failed, retrying in %ss: %s",
                context.job_id,
                context.attempt,
                delay,
                error["message"],
            )
            return self._publish_retry(payload, exc, delay)
        self.app.jobstore.failed(context.job_id, error)
        workflow = getattr(self.request, "taskplane_workflow", "")
        if workflow:
            workflows.step_failed(self.app, workflow, error)
        if getattr(self.request, "taskplane_callback_url", ""):
            try:
                callbacks.notify_final(self.app, self.app.jobstore.get(context.job_id))
            except (Unavailable, RedisError, *PUBLISH_ERRORS) as notify_error:
                # The message is rejected below and dead-lettered: the
                # dead-letter watcher (tasks/runtime/deaths.py) notifies then.
                logger.warning(
                    "job %s: could not submit its completion callback yet (%s)",
                    context.job_id,
                    notify_error,
                )
        logger.error(
            "job %s failed after %s attempt(s): %s",
            context.job_id,
            context.attempt,
            error["message"],
        )
        return exc

    def _retry_delay(self, exc: Exception, attempt: int) -> int | None:
        """Seconds until the next attempt, or None when the job fails now."""
        if isinstance(exc, EffectInProgress):
            # Waiting for another run's effect spends no attempt and is not
            # scaled: it ends within one lease (that run finishes, or dies and
            # stops extending its claim).
            return whole_seconds(exc.retry_after or 1)
        policy = self.job_type.retry
        budget = (self.app.conf.taskplane_queues or {}).get(self.job_type.queue, {})
        max_attempts = budget.get("max_attempts") or policy.max_attempts
        if not is_transient(exc) or attempt >= max_attempts:
            return None
        return whole_seconds(
            policy.delay_after(
                attempt,
                retry_after=getattr(exc, "retry_after", None),
                scale=float(self.app.conf.taskplane_backoff_scale),
            )
        )


def whole_seconds(delay: float) -> int:
    """Native delayed delivery counts whole seconds, and rejects a countdown below one."""
    return max(1, round(delay))


def is_transient(exc: BaseException) -> bool:
    """Anything but an explicit permanent error or an invalid payload may pass on retry."""
    return not isinstance(exc, PermanentError | ValidationError)


def describe_error(exc: BaseException, attempt: int) -> dict[str, Any]:
    """A JSON-safe description for the job record (never the payload itself)."""
    if isinstance(exc, ValidationError):
        kind = "invalid_payload"
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
    elif isinstance(exc, SoftTimeLimitExceeded):
        kind, message = "timeout", "the job exceeded its time limit"
    elif isinstance(exc, PermanentError):
        kind, message = "permanent", str(exc)
    elif isinstance(exc, TransientError):
        kind, message = "transient", str(exc)
    else:
        kind, message = "exception", f"{type(exc).__name__}: {exc}"
    return {
        "type": kind,
        "exception": type(exc).__name__,
        "message": message[:2000],
        "attempt": attempt,
    }
