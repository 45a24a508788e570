"""The submission core: the one way a job enters Taskplane.

Every producer calls it: ``POST /jobs`` and ``POST /jobs/batch``, dead-letter
replay, a worker's retry, and (next) the scheduler and workflow steps. It

1. validates each job against the registry (envelope, job type, payload
   schema, URL policy, how far ahead it may be scheduled): ``check`` and
   ``check_batch`` differ only in how they report per-item errors;
2. writes the records in one script call per 500 (tasks/core/jobstore.CREATE_CHUNK);
3. publishes the messages with confirms, immediate and delayed alike, on the
   deadline-bounded publisher (tasks/core/publisher.py);
4. returns the records once every message is confirmed, or removes what it
   wrote and raises ``Unavailable`` (the caller answers 503).

A caller may give a **deterministic job id** (a schedule's fire, a workflow
step): creating a job whose id exists returns the existing record and
publishes nothing, atomically in Redis, so producers racing on one id create
one job and one message. A producer that finds the record of a racing one not
yet confirmed waits for it (bounded); one whose producer died mid-publish is
adopted and published once more (the worker runs a job id once).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from amqp.exceptions import AMQPError, MessageNacked
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)
from redis.exceptions import RedisError

from tasks.core.errors import Unavailable
from tasks.core.jobstore import CreateOutcome, NewRecord, rfc3339, utcnow
from tasks.core.messages import job_headers
from tasks.core.netpolicy import UrlNotAllowed, policy_for
from tasks.core.publisher import Outgoing
from tasks.core.registry import JobType
from tasks.core.schema_types import HttpUrl, Rfc3339, Tags
from tasks.core.validation import validate_json_payload, validation_details

logger = logging.getLogger("taskplane.submission")

# Native delayed delivery reaches about 8.5 years; a month is a sane bound.
MAX_DELAY_S = 30 * 24 * 3600
# Jobs per batch: one request, two Redis script calls at most, one confirmed write.
MAX_BATCH = 1000
# What a publish that did not get its confirm raises: timeouts, a dead
# connection and a blocked broker are OSErrors; a channel or connection the
# broker closed is an AMQPError; a nack (a quorum queue without a leader yet,
# a queue refusing more) is py-amqp's MessageNacked, a plain Exception.
PUBLISH_ERRORS = (OSError, AMQPError, MessageNacked)
# Record fields only the core reads.
PRIVATE_FIELDS = frozenset({"token", "publishing", "run", "retention_s"})
# Rounds of "the racing producer gave up, create it ourselves" before giving up.
RACE_ROUNDS = 3
# How often a producer looks whether a racing producer's publish was confirmed.
RACE_POLL_S = 0.02


class JobEnvelope(BaseModel):
    """What a producer says about a job: its type, payload and when it may run."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, description="a job type name, see /job-types")
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    delay_s: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, description="run no sooner than this many seconds"
    )
    run_at: Rfc3339 | None = Field(
        default=None,
        description=f"RFC 3339 time with offset, at most {MAX_DELAY_S // 86400} days ahead;"
        " run no sooner",
    )
    tags: Tags | None = None
    callback_url: HttpUrl | None = Field(
        default=None,
        description="when the job reaches a final state, its view is POSTed here as a "
        "webhook.deliver job, signed with X-Taskplane-Signature",
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.delay_s is not None and self.run_at is not None:
            raise ValueError("give at most one of 'delay_s' or 'run_at'")
        return self


@dataclass(frozen=True)
class NewJob:
    """A validated job, ready for ``submit``."""

    job_type: JobType
    payload: dict[str, Any]
    run_at: datetime | None = None  # None: now
    job_id: str | None = None  # deterministic id given by the producer
    tags: Mapping[str, str] | None = None
    parent_id: str | None = None
    workflow: str | None = None  # "<workflow>/<step>[#item]": the runtime reports back to it
    callback_url: str | None = None  # POSTed the job's view when it reaches a final state


@dataclass(frozen=True)
class Submitted:
    record: dict[str, Any]
    created: bool  # False: the id existed; nothing was published


@dataclass(frozen=True)
class Idempotency:
    """A producer's Idempotency-Key (already namespaced by it) and its request's digest."""

    key: str
    fingerprint: str
    ttl_s: int


class InvalidJob(Exception):
    """The job cannot be accepted; ``problems`` are ``{path, type, message}`` entries."""

    def __init__(self, code: str, message: str, problems: list[dict[str, str]], **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems
        self.extra = extra


class InvalidBatch(Exception):
    """Some items of a batch are invalid; ``problems`` carry the item's ``index``."""

    def __init__(self, message: str, problems: list[dict[str, Any]]):
        super().__init__(message)
        self.message = message
        self.problems = problems


class IdempotencyConflict(Exception):
    """The key was used with another request (``in_progress``: its first use is not done)."""

    def __init__(self, job_id: str, in_progress: bool):
        super().__init__(job_id)
        self.job_id = job_id
        self.in_progress = in_progress


# -- validation ---------------------------------------------------------------------


def check(app: Any, item: Any, *, job_id: str | None = None, **meta: Any) -> NewJob:
    """Validate one job (an envelope dict) against the registry and this environment."""
    try:
        envelope = validate_json_payload(JobEnvelope, item)
    except ValidationError as exc:
        raise InvalidJob(
            "validation_failed", "the request body is invalid", validation_details(exc)
        ) from exc
    job_type = app.job_types.get(envelope.type)
    if job_type is None:
        raise InvalidJob(
            "unknown_job_type",
            f"no job type named {envelope.type!r}",
            [
                {
                    "path": "type",
                    "type": "unknown_job_type",
                    "message": f"no job type named {envelope.type!r}",
                }
            ],
            known=sorted(app.job_types),
        )
    payload = check_payload(app, job_type, envelope.payload)
    run_at = _run_at(envelope.delay_s, envelope.run_at)
    if envelope.tags:
        meta["tags"] = {**envelope.tags, **(meta.get("tags") or {})}  # the platform's win
    if envelope.callback_url is not None:
        meta["callback_url"] = check_callback_url(app, str(envelope.callback_url))
    return NewJob(job_type, payload, run_at, job_id=job_id, **meta)


def check_callback_url(app: Any, url: str) -> str:
    """The environment's URL policy applies to callbacks as to webhook payloads."""
    from tasks.core.callbacks import check_configured  # it imports this module

    check_configured(app)  # production without TASKPLANE_CALLBACK_SECRET: refused
    try:
        policy_for(app.conf).check_url(url)
    except UrlNotAllowed as exc:
        raise InvalidJob(
            "url_not_allowed",
            f"callback_url is not allowed: {exc}",
            [{"path": "callback_url", "message": str(exc), "type": "url_not_allowed"}],
        ) from exc
    return url


def check_payload(app: Any, job_type: JobType, payload: Any) -> dict[str, Any]:
    """The payload as the job type's schema and the URL policy accept it (JSON-ready)."""
    try:
        model = validate_json_payload(job_type.payload_model, payload)
    except ValidationError as exc:
        raise InvalidJob(
            "validation_failed",
            f"the payload does not fit {job_type.name}",
            validation_details(exc, prefix="payload"),
        ) from exc
    _check_urls(app, job_type, model)
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def check_batch(app: Any, items: Any) -> list[NewJob]:
    """Validate every item before anything is created; all or nothing."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise InvalidBatch(
            f"'jobs' must be a list of 1 to {MAX_BATCH} jobs",
            [{"path": "jobs", "message": "wrong size or type", "type": "size"}],
        )
    jobs, problems = [], []
    for index, item in enumerate(items):
        try:
            jobs.append(check(app, item))
        except InvalidJob as exc:
            problems += [{"index": index, **problem} for problem in exc.problems]
    if problems:
        failing = len({p["index"] for p in problems})
        raise InvalidBatch(
            f"{failing} of {len(items)} jobs are invalid; nothing was submitted", problems
        )
    return jobs


def _check_urls(app: Any, job_type: JobType, payload: Any) -> None:
    """The environment's URL policy (anti-SSRF) for the payload's URL fields."""
    if not job_type.url_fields:
        return
    policy = policy_for(app.conf)
    for name in job_type.url_fields:
        value = getattr(payload, name, None)
        if value is None:
            continue
        try:
            policy.check_url(str(value))
        except UrlNotAllowed as exc:
            raise InvalidJob(
                "url_not_allowed",
                f"payload.{name} is not allowed: {exc}",
                [{"path": f"payload.{name}", "message": str(exc), "type": "url_not_allowed"}],
            ) from exc


def _run_at(delay_s: float | None, run_at: datetime | None) -> datetime | None:
    if delay_s:
        run_at = datetime.now(UTC) + timedelta(seconds=delay_s)
    if run_at is not None and (run_at - datetime.now(UTC)).total_seconds() > MAX_DELAY_S:
        raise InvalidJob(
            "validation_failed",
            "a job can be scheduled at most 30 days ahead",
            [{"path": "run_at", "message": "too far ahead", "type": "range"}],
        )
    return run_at


def countdown_for(run_at: datetime | None) -> int | None:
    """Whole seconds until ``run_at``, rounded (native delayed delivery counts seconds).

    Rounded rather than cut: ``delay_s: 1`` leaves a hair under a second by the
    time it is published, and must still wait a second.
    """
    if run_at is None:
        return None
    seconds = round((run_at - datetime.now(UTC)).total_seconds())
    return seconds if seconds >= 1 else None


# -- submission ---------------------------------------------------------------------


@dataclass
class _Plan:
    job: NewJob
    job_id: str
    fields: dict[str, Any]
    countdown: int | None
    token: str = ""
    mark: str = ""
    outcome: CreateOutcome | None = None
    adopted: bool = False
    existing: dict[str, Any] | None = field(default=None)


def submit(
    app: Any,
    jobs: Sequence[NewJob],
    *,
    idempotency: Idempotency | None = None,
    timeout_s: float | None = None,
) -> list[Submitted]:
    """Record and publish ``jobs``; every message confirmed, or ``Unavailable`` and none kept.

    With ``idempotency``, the first submission under the key is returned
    (``created=False``) instead of creating jobs again.
    """
    if not jobs:
        return []
    timeout_s = confirm_timeout_s(app, len(jobs)) if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    store = app.jobstore
    ids = _job_ids(jobs)
    if idempotency is not None:
        repeat = _claim(app, idempotency, ids, len(jobs))
        if repeat is not None:
            return repeat
    plans = _plans(jobs, ids, deadline, app.retention_overrides)
    try:
        for plan, outcome in zip(
            plans,
            store.create_many([NewRecord(p.fields, p.token, p.mark) for p in plans]),
            strict=True,
        ):
            plan.outcome = outcome
    except RedisError as exc:
        logger.warning("could not record %d job(s): %s", len(plans), exc)
        # A Redis that timed out may still run the writes later: remove them then.
        app.forgetter.forget_attempts(ids, [p.token for p in plans], now=False)
        _release(app, idempotency, ids[0])
        raise Unavailable("job storage", exc) from exc
    states = [p.outcome.state for p in plans if p.outcome is not None]
    try:
        if "refused" in states:  # an attempt given up before: cannot be a fresh one
            raise Unavailable("job storage")
        _settle_races(app, [p for p in plans if p.outcome.state == "exists"], deadline)  # type: ignore[union-attr]
    except RedisError as exc:
        _abandon(app, plans, idempotency)
        raise Unavailable("job storage", exc) from exc
    except Unavailable:
        _abandon(app, plans, idempotency)
        raise
    outgoing = [p for p in plans if p.adopted or p.outcome.state == "created"]  # type: ignore[union-attr]
    try:
        publish(app, outgoing, deadline)
    except PUBLISH_ERRORS as exc:
        logger.warning("broker did not confirm %d job(s): %r", len(outgoing), exc)
        _abandon(app, plans, idempotency)
        raise Unavailable("the message broker", exc) from exc
    marked = [p for p in outgoing if p.mark]
    if marked:
        try:
            store.published([p.job_id for p in marked], [p.mark for p in marked])
        except RedisError as exc:  # the marks lapse; a racing producer then adopts
            logger.warning("could not clear publishing marks: %s", exc)
    return [
        Submitted(p.fields, True) if p.existing is None else Submitted(public(p.existing), False)
        for p in plans
    ]


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the core's own bookkeeping (create tokens, publishing marks)."""
    return {k: v for k, v in record.items() if k not in PRIVATE_FIELDS}


def confirm_timeout_s(app: Any, jobs: int = 1) -> float:
    """How long the broker may take to confirm ``jobs`` messages before we give up."""
    return float(app.conf.taskplane_confirm_timeout_s) + (jobs - 1) / 50


def publish(app: Any, plans: Sequence[_Plan], deadline: float) -> None:
    publisher = app.publisher
    messages = [
        Outgoing(
            p.job.job_type.queue,
            publisher.build(
                p.job_id, p.job.job_type.name, p.job.payload, job_headers(), countdown=p.countdown
            ),
            p.countdown,
        )
        for p in plans
    ]
    if messages:
        publisher.publish(messages, max(deadline - time.monotonic(), 0.001))


def _job_ids(jobs: Sequence[NewJob]) -> list[str]:
    """Given ids as they are; fresh ones derived from the first, so a batch is one key."""
    first = str(uuid.uuid4())
    return [
        job.job_id or (first if index == 0 else str(uuid.uuid5(uuid.UUID(first), str(index))))
        for index, job in enumerate(jobs)
    ]


def batch_ids(first: str, count: int) -> list[str]:
    """The fresh ids of a batch whose first job is ``first`` (see ``_job_ids``)."""
    return [first] + [str(uuid.uuid5(uuid.UUID(first), str(i))) for i in range(1, count)]


def _plans(
    jobs: Sequence[NewJob], ids: list[str], deadline: float, retention: Mapping[str, int]
) -> list[_Plan]:
    now = utcnow()
    deadline_ms = int((time.time() + max(deadline - time.monotonic(), 0)) * 1000)
    plans = []
    for job, job_id in zip(jobs, ids, strict=True):
        countdown = countdown_for(job.run_at)
        fields: dict[str, Any] = {
            "id": job_id,
            "type": job.job_type.name,
            "queue": job.job_type.queue,
            "state": "scheduled" if countdown else "queued",
            "attempts": 0,
            "created_at": now,
        }
        if countdown:
            fields["scheduled_for"] = rfc3339(job.run_at)  # type: ignore[arg-type]
        if job.tags:
            fields["tags"] = dict(job.tags)
        if job.parent_id:
            fields["parent_id"] = job.parent_id
        if job.workflow:
            fields["workflow"] = job.workflow
        if job.callback_url:
            fields["callback_url"] = job.callback_url
        if job.job_type.name in retention:  # else the store's default
            fields["retention_s"] = retention[job.job_type.name]
        plan = _Plan(job, job_id, fields, countdown)
        if job.job_id is not None:  # more than one producer may create this id
            plan.token = uuid.uuid4().hex
            plan.mark = f"{plan.token}:{deadline_ms}"
        plans.append(plan)
    return plans


def _settle_races(app: Any, plans: list[_Plan], deadline: float) -> None:
    """For ids that exist: wait for a racing producer's confirm, or adopt a dead one's job.

    A racing producer that gave up removes its record; then this one creates it
    after all (a few rounds at most: each needs another producer to give up).
    """
    store = app.jobstore
    for plan in plans:
        for _ in range(RACE_ROUNDS):
            existing = plan.outcome.existing or {}  # type: ignore[union-attr]
            _await_confirm(store, plan, existing.get("publishing"), deadline)
            if plan.adopted:
                break
            current = store.get(plan.job_id)
            if current is not None:
                plan.existing, plan.mark = current, ""
                break
            (plan.outcome,) = store.create_many([NewRecord(plan.fields, plan.token, plan.mark)])
            if plan.outcome.state != "exists":
                break
        else:
            raise Unavailable("job storage")  # producers keep giving this id up
        if plan.outcome.state == "refused":  # type: ignore[union-attr]
            raise Unavailable("job storage")


def _await_confirm(store: Any, plan: _Plan, mark: str | None, deadline: float) -> None:
    """Until the racing producer's mark is gone, or adopt its job once its deadline passed."""
    while mark:
        if int(mark.rsplit(":", 1)[1]) < time.time() * 1000:
            # Its producer's deadline passed without a confirm: it died or
            # gave up without a trace. Publish it ourselves, once.
            if store.adopt(plan.job_id, mark, plan.mark):
                plan.adopted = True
                return
        elif time.monotonic() > deadline:
            raise Unavailable("job storage")  # the other producer is still at it
        time.sleep(RACE_POLL_S)
        mark = store.publishing_mark(plan.job_id)


def _abandon(app: Any, plans: list[_Plan], idempotency: Idempotency | None) -> None:
    created = [p for p in plans if p.outcome is not None and p.outcome.state == "created"]
    app.forgetter.forget_attempts([p.job_id for p in created], [p.token for p in created])
    if plans:
        _release(app, idempotency, plans[0].job_id)


def _claim(
    app: Any, idempotency: Idempotency, ids: list[str], count: int
) -> list[Submitted] | None:
    """None when the key is ours now; else the jobs its first use created."""
    store = app.jobstore
    try:
        held = store.claim_idempotency_key(
            idempotency.key, idempotency.fingerprint, ids[0], idempotency.ttl_s
        )
        if held is None:
            return None
        fingerprint, first = held
        if fingerprint != idempotency.fingerprint:
            raise IdempotencyConflict(first, in_progress=False)
        records = store.get_many(batch_ids(first, count))
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    if any(record is None for record in records):
        raise IdempotencyConflict(first, in_progress=True)
    return [Submitted(public(record), False) for record in records if record is not None]


def _release(app: Any, idempotency: Idempotency | None, first_id: str) -> None:
    if idempotency is None:
        return
    try:
        app.jobstore.release_idempotency_key(idempotency.key, first_id)
    except RedisError:
        pass  # the key expires on its own; its job's tombstone frees it meanwhile


def replacement_message(app: Any, job_id: str, job_type: JobType, payload: dict[str, Any]) -> Any:
    """The message of a replay with a corrected payload: same job id, checked payload."""
    return app.publisher.build(job_id, job_type.name, payload, job_headers())


# -- continuations of existing jobs -------------------------------------------------


def publish_retry(
    app: Any,
    job_id: str,
    job_type: JobType,
    payload: Any,
    *,
    countdown: int,
    retries: int,
    takeover: bool,
) -> None:
    """Publish a running job's next attempt; waits through a blocked broker, up to its bound.

    The record is the runtime's to change (it is "retrying" already); this
    publishes only. Raises one of ``PUBLISH_ERRORS`` when not confirmed.
    """
    publisher = app.publisher
    message = publisher.build(
        job_id,
        job_type.name,
        payload,
        job_headers(takeover=takeover),
        countdown=countdown,
        retries=retries,
    )
    publisher.publish(
        [Outgoing(job_type.queue, message, countdown)],
        float(app.conf.taskplane_retry_publish_timeout_s),
        wait_when_blocked=True,
    )


def replay(
    app: Any,
    job_id: str,
    queue: str,
    message: Any,
    note: dict[str, Any] | None = None,
) -> None:
    """Send a dead-lettered job back: its record reset (history kept), its message confirmed.

    ``message`` is the dead letter as an ``amqp.Message``, published as it is,
    or a new message of the same job (``replacement_message``) when the
    operator corrected its payload. ``note`` goes into the previous run's
    history entry. Raises ``Unavailable`` when it is not confirmed; the
    caller keeps the dead copy.
    """
    try:
        app.jobstore.reset_for_replay(job_id, queue, note)
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    try:
        app.publisher.publish([Outgoing(queue, message)], confirm_timeout_s(app))
    except PUBLISH_ERRORS as exc:
        raise Unavailable("the message broker", exc) from exc
