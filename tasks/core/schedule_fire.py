"""Firing schedules: what a scheduler pass does, "run now", and declared schedules.

A fire is an ordinary job created by the submission core with a deterministic id
(``fire_job_id(schedule, due)``): however many schedulers handle the same due time,
the core creates one job and publishes one message. What the pass records
afterwards (watermark, counts, the fire list) is a compare-and-set in Redis, so
that too happens once.

One pass over one schedule:

1. the fires due in (watermark, now], at most ``SCAN_LIMIT`` of the newest;
2. those due more than ``grace`` ago are *missed* (no scheduler ran in time): the
   schedule's policy picks which of them still fire (all, up to a bound; the last;
   none); the rest are counted as missed;
3. each fire, oldest first: skipped when the overlap policy is "skip" and the
   previous fire's job has not finished, else submitted (run at the jittered time);
4. recorded; a fire the core could not confirm (broker or Redis down) is not
   recorded and is tried again on the next pass, until it is missed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from redis.exceptions import RedisError

from tasks.core.errors import Unavailable
from tasks.core.jobstore import FINAL_STATES, rfc3339
from tasks.core.schedule_times import (
    fire_job_id,
    jittered,
    missed_fires,
    next_fire,
    scan_due,
)
from tasks.core.schedules import (
    InvalidSchedule,
    Schedule,
    ScheduleStore,
    StoredSchedule,
    check_schedule,
    fingerprint,
    recheck,
)
from tasks.core.submission import InvalidJob, Submitted, check, submit

logger = logging.getLogger("taskplane.schedules")
_tracer = trace.get_tracer("taskplane.scheduler")

# The newest fires a pass looks at (an interval of 1 s down for a day has 86,400).
SCAN_LIMIT = 1000
# How far back a pass looks for fires it has not handled.
LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class FirePolicy:
    """How late a fire may be before it counts as missed, and how many missed ones fire."""

    grace_s: float = 2.0
    catch_up_limit: int = 100


@dataclass(frozen=True)
class PassResult:
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    failed: bool = False  # the core could not confirm a fire: try again next pass
    disabled: bool = False


def policy_for(conf: Any) -> FirePolicy:
    return FirePolicy(
        grace_s=float(conf.taskplane_scheduler_grace_s),
        catch_up_limit=int(conf.taskplane_scheduler_catch_up_limit),
    )


def run_pass(
    app: Any,
    store: ScheduleStore,
    stored: StoredSchedule,
    now: datetime,
    policy: FirePolicy,
    still_leader: Any = lambda: True,
) -> PassResult:
    """Handle the fires of one schedule due by ``now`` (see the module docstring)."""
    schedule = stored.schedule
    since = max(stored.watermark, now - LOOKBACK)
    scan = scan_due(schedule.cadence, since, now, SCAN_LIMIT, schedule.start_at, schedule.end_at)
    if scan.total == 0:
        return PassResult()
    late_before = now - timedelta(seconds=policy.grace_s)
    late = [due for due in scan.fires if due <= late_before]
    fresh = [due for due in scan.fires if due > late_before]
    chosen = missed_fires(schedule.missed, late, policy.catch_up_limit) + fresh
    expect = stored.watermark_ms
    last_job = stored.last_job
    chosen_set = set(chosen)
    if late and late[0] not in chosen_set and scan.dropped == 0:
        # The oldest due time may have been fired by a pass that could not record
        # it (Redis went away, the scheduler stopped): its job exists and runs, so
        # it counts as fired, not missed. Only the oldest can be: a pass stops at
        # the first fire it cannot record.
        try:
            if app.jobstore.get(fire_job_id(schedule.id, late[0])) is not None:
                chosen_set.add(late[0])
        except RedisError as exc:
            logger.warning("schedule %s: cannot look up a fire: %s", schedule.id, exc)
            return PassResult(failed=True)
    fired = skipped = missed = 0
    pending_missed = scan.dropped
    for due in scan.fires:
        if due not in chosen_set:
            pending_missed += 1
            continue
        if not still_leader():
            return PassResult(fired, skipped, missed, failed=True)
        outcome, job_id = "fired", ""
        try:
            busy = schedule.overlap == "skip" and _running(app, last_job)
        except RedisError as exc:
            logger.warning("schedule %s: previous fire unknown: %s", schedule.id, exc)
            return PassResult(fired, skipped, missed, failed=True)
        if busy:
            outcome = "skipped"
        else:
            try:
                submitted = fire(app, schedule, due)
            except InvalidJob as exc:
                _disable(store, schedule, exc)
                return PassResult(fired, skipped, missed, disabled=True)
            except (Unavailable, RedisError) as exc:
                logger.warning("schedule %s: fire due %s not confirmed: %s", schedule.id, due, exc)
                return PassResult(fired, skipped, missed, failed=True)
            job_id = submitted.record["id"]
        due_ms = _ms(due)
        lag = max((datetime.now(UTC) - due).total_seconds(), 0.0)
        recorded = store.record(
            schedule.id,
            expect_ms=expect,
            due_ms=due_ms,
            missed=pending_missed,
            outcome=outcome,
            job_id=job_id,
            due_at=rfc3339(due),
            lag_s=lag if outcome == "fired" else None,
        )
        if not recorded:  # another scheduler recorded these fires (or it was changed)
            return PassResult(fired, skipped, missed)
        expect = due_ms
        missed += pending_missed
        pending_missed = 0
        if outcome == "fired":
            fired += 1
            last_job = job_id
        else:
            skipped += 1
    if pending_missed:  # missed fires after the last chosen one (or with none chosen)
        newest = _ms(scan.fires[-1])
        if store.record(schedule.id, expect_ms=expect, due_ms=newest, missed=pending_missed):
            missed += pending_missed
    return PassResult(fired, skipped, missed)


def fire(app: Any, schedule: Schedule, due: datetime) -> Submitted:
    """Create the fire of ``schedule`` due at ``due`` as a job, through the submission core.

    The payload is checked again against the job type as it is now: a schema that
    changed under a stored schedule raises InvalidJob instead of firing garbage.
    """
    envelope: dict[str, Any] = {"type": schedule.type, "payload": schedule.payload}
    if schedule.tags:
        envelope["tags"] = schedule.tags
    run_at = jittered(due, schedule.jitter_s, schedule.id)
    if run_at > datetime.now(UTC) + timedelta(seconds=1):
        envelope["run_at"] = rfc3339(run_at)
    job = check(
        app,
        envelope,
        job_id=fire_job_id(schedule.id, due),
        tags={"schedule": schedule.id, "due_at": rfc3339(due)},
    )
    # Each fire starts its own trace (as an HTTP request does), carried into the job.
    attributes = {"taskplane.schedule": schedule.id, "taskplane.due_at": rfc3339(due)}
    with _tracer.start_as_current_span("schedule fire", attributes=attributes):
        (submitted,) = submit(app, [job])
    return submitted


def run_now(app: Any, store: ScheduleStore, stored: StoredSchedule) -> Submitted:
    """Fire a schedule at once, out of its cadence (``POST /schedules/<id>/run``).

    A fresh job id each time: "run now" twice is two runs. It counts as fired and
    becomes the previous fire for the overlap policy; the cadence is untouched.
    """
    schedule = stored.schedule
    try:
        recheck(app, schedule)
    except InvalidJob as exc:
        _disable(store, schedule, exc)
        raise
    now = datetime.now(UTC)
    envelope: dict[str, Any] = {"type": schedule.type, "payload": schedule.payload}
    if schedule.tags:
        envelope["tags"] = schedule.tags
    job = check(
        app,
        envelope,
        job_id=str(uuid.uuid4()),
        tags={"schedule": schedule.id, "due_at": rfc3339(now), "trigger": "manual"},
    )
    (submitted,) = submit(app, [job])
    try:
        store.record(
            schedule.id,
            expect_ms=None,
            due_ms=None,
            outcome="manual",
            job_id=submitted.record["id"],
            due_at=rfc3339(now),
        )
    except RedisError as exc:  # the job exists and runs; only the listing misses it
        logger.warning("schedule %s: run-now job not listed: %s", schedule.id, exc)
    return submitted


def _running(app: Any, job_id: str | None) -> bool:
    """Whether the previous fire's job has yet to finish (gone counts as finished)."""
    if not job_id:
        return False
    record = app.jobstore.get(job_id)
    return record is not None and record.get("state") not in FINAL_STATES


def _disable(store: ScheduleStore, schedule: Schedule, exc: InvalidJob) -> None:
    reason = f"{exc.message}: " + "; ".join(
        f"{p.get('path')}: {p.get('message')}" for p in exc.problems
    )
    logger.error("schedule %s disabled: %s", schedule.id, reason)
    store.set_enabled(schedule.id, False, reason=reason[:1000])


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


# -- reading ------------------------------------------------------------------------


def describe(app: Any, store: ScheduleStore, stored: StoredSchedule) -> dict[str, Any]:
    """A schedule as GET shows it: definition, next fire, last fires with job states."""
    schedule = stored.schedule
    fires = store.fires(schedule.id)
    job_ids = [f["job_id"] for f in fires if f.get("job_id")]
    records = dict(zip(job_ids, app.jobstore.get_many(job_ids), strict=True)) if job_ids else {}
    last_fires = []
    for entry in fires:
        job_id = entry.get("job_id")
        if job_id:
            record = records.get(job_id)
            state = record.get("state") if record else "expired"
        else:
            state = entry.get("outcome", "skipped")
        last_fires.append(
            {
                "due_at": entry.get("due_at"),
                "job_id": job_id,
                "state": state,
                "trigger": "manual" if entry.get("outcome") == "manual" else "schedule",
            }
        )
    return {
        **schedule.as_fields(),
        "enabled": stored.enabled,
        "disabled_reason": stored.disabled_reason,
        "origin": stored.origin,
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
        "next_fire_at": _next_fire_at(stored),
        "last_fires": last_fires,
        "counts": dict(stored.counts),
    }


def _next_fire_at(stored: StoredSchedule) -> str | None:
    if not stored.enabled:
        return None
    schedule = stored.schedule
    after = max(stored.watermark, datetime.now(UTC) - timedelta(seconds=1))
    due = next_fire(schedule.cadence, after, schedule.start_at, schedule.end_at)
    return None if due is None else rfc3339(due)


# -- declared schedules -------------------------------------------------------------


@dataclass(frozen=True)
class Reconciled:
    created: list[str]
    updated: list[str]
    removed: list[str]
    kept: list[str]


def reconcile(app: Any, store: ScheduleStore, declared: Iterable[Mapping[str, Any]]) -> Reconciled:
    """Make the schedules declared in config exist as declared; safe to run anywhere, often.

    A declaration is applied when it is new or changed (by its fingerprint), so a
    pause or resume over HTTP survives restarts until the declaration itself
    changes. Config-declared schedules that are no longer declared are removed;
    schedules made over HTTP are never touched. An invalid declaration raises
    InvalidSchedule naming it: a scheduler must not start on a broken config.
    """
    wanted: dict[str, tuple[Schedule, bool, str]] = {}
    for index, item in enumerate(declared):
        try:
            schedule, enabled = check_schedule(app, dict(item))
        except InvalidSchedule as exc:
            name = item.get("id", f"#{index}") if isinstance(item, Mapping) else f"#{index}"
            exc.message = f"declared schedule {name}: {exc.message}"
            raise
        wanted[schedule.id] = (schedule, enabled, fingerprint(item))
    created, updated, kept = [], [], []
    for schedule_id, (schedule, enabled, mark) in wanted.items():
        current = store.get(schedule_id)
        if current is None:
            if store.create(schedule, enabled=enabled, origin="config", declared=mark):
                created.append(schedule_id)
            continue
        if current.origin == "config" and current.declared == mark:
            kept.append(schedule_id)
            continue
        restart = current.schedule.timing() != schedule.timing()
        store.replace(schedule, restart=restart, enabled=enabled, origin="config", declared=mark)
        updated.append(schedule_id)
    stale = [s.id for s in store.all() if s.origin == "config" and s.id not in wanted]
    removed = [schedule_id for schedule_id in stale if store.delete(schedule_id)]
    return Reconciled(created, updated, removed, kept)
