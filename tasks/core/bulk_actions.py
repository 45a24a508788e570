"""Acting on many jobs at once: cancel, replay, purge; and replaying one with a new payload.

Each action takes ids or a filter (tasks/core/job_search.JobFilter), acts on
at most ``MAX_BULK`` jobs per call and says whether more matched, so a large
cleanup is a loop of bounded requests rather than one unbounded one. Only
jobs in the states an action applies to are touched (cancel: waiting;
replay: failed and dead-lettered; purge: finished), each in one atomic
script step, so a job that moved on meanwhile is skipped, not harmed.
Replays go through the submission core (tasks/core/deadletters.replay_dead,
tasks/core/submission.replay). Used by the HTTP API and ``flask jobs``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from tasks.core.callbacks import notify_final
from tasks.core.deadletters import purge_dead, replay_dead, replay_dead_waiting
from tasks.core.errors import Unavailable
from tasks.core.job_search import JobFilter, matching
from tasks.core.submission import (
    InvalidJob,
    check_payload,
    public,
    replacement_message,
    replay,
)

logger = logging.getLogger("taskplane.bulk")
MAX_BULK = 1000
# States each action applies to, in the order a filter without a state walks them.
ACTION_STATES: dict[str, tuple[str, ...]] = {
    "cancel": ("queued", "scheduled", "retrying"),
    "replay": ("failed",),
    "purge": ("succeeded", "failed", "cancelled"),
}


class JobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class NotReplayable(Exception):
    """The job cannot be replayed now; ``code`` says why (the caller answers 409)."""

    def __init__(self, code: str, message: str, state: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.state = state


@dataclass
class BulkReport:
    action: str
    dry_run: bool
    matched: int = 0
    more: bool = False
    acted: int = 0
    ids: list[str] = field(default_factory=list)  # the jobs acted on
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many
    not_found: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "matched": self.matched,
            "more": self.more,
            "acted": self.acted,
            "ids": self.ids,
            "skipped": self.skipped,
            "not_found": self.not_found,
        }


def select(
    app: Any,
    action: str,
    *,
    ids: list[str] | None = None,
    job_filter: JobFilter | None = None,
    bound: int = MAX_BULK,
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """The records an action would touch (in an eligible state), ids not found, and more."""
    eligible = ACTION_STATES[action]
    try:
        if ids is not None:
            records = app.jobstore.get_many(ids)
            missing = [i for i, r in zip(ids, records, strict=True) if r is None]
            found = [r for r in records if r is not None]
            return [r for r in found if r.get("state") in eligible], missing, False
        assert job_filter is not None
        if job_filter.state is not None and job_filter.state not in eligible:
            raise InvalidJob(
                "state_not_eligible",
                f"{action} applies to jobs in states {', '.join(eligible)}",
                [{"path": "filter.state", "type": "enum", "message": f"one of {eligible}"}],
            )
        states = (job_filter.state,) if job_filter.state else eligible
        records, more = [], False
        for state in states:
            found, state_more = matching(app, job_filter.with_state(state), bound - len(records))
            records += found
            more = more or state_more
            if len(records) >= bound:
                more = more or state != states[-1]
                break
        return records, [], more
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc


def run(
    app: Any,
    action: str,
    *,
    ids: list[str] | None = None,
    job_filter: JobFilter | None = None,
    dry_run: bool = False,
) -> BulkReport:
    """Select, then (unless ``dry_run``) act; the report counts both."""
    records, missing, more = select(app, action, ids=ids, job_filter=job_filter)
    report = BulkReport(action, dry_run, matched=len(records), more=more, not_found=missing)
    if ids is not None:
        ineligible = len(ids) - len(missing) - len(records)
        if ineligible:
            report.skipped["not_eligible"] = ineligible
    if dry_run or not records:
        return report
    try:
        {"cancel": _cancel, "replay": _replay, "purge": _purge}[action](app, records, report)
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    report.acted = len(report.ids)
    return report


def _cancel(app: Any, records: list[dict[str, Any]], report: BulkReport) -> None:
    ids = [r["id"] for r in records]
    outcomes = app.jobstore.cancel_many(ids)
    report.ids = [i for i, o in zip(ids, outcomes, strict=True) if o == "cancelled"]
    _count_skipped(report, [o for o in outcomes if o != "cancelled"])
    wanted = {r["id"] for r in records if r.get("callback_url")}
    after_cancel(app, [i for i in report.ids if i in wanted])


def after_cancel(app: Any, job_ids: list[str]) -> None:
    """Completion callbacks of jobs just cancelled (pass only those with a callback_url).

    The cancel stands whatever happens here. A callback that cannot be
    submitted now (broker or Redis down) is logged; the job's message, when a
    worker receives it, finds the job final and submits it then (the
    callback's id is fixed per completion, so never twice).
    """
    if not job_ids:
        return
    try:
        records = app.jobstore.get_many(job_ids)
    except RedisError as exc:
        logger.warning("callbacks of %d cancelled job(s) deferred: %s", len(job_ids), exc)
        return
    for job_id, record in zip(job_ids, records, strict=True):
        try:
            notify_final(app, record)
        except Unavailable as exc:
            logger.warning("callback of cancelled job %s deferred: %s", job_id, exc)


def _replay(app: Any, records: list[dict[str, Any]], report: BulkReport) -> None:
    by_queue: dict[str, list[str]] = defaultdict(list)
    pending = 0
    for record in records:
        if record.get("dead_lettered_at"):
            by_queue[record.get("queue", "")].append(record["id"])
        else:
            pending += 1  # failed a moment ago; its dead letter is on its way
    if pending:
        report.skipped["not_dead_lettered_yet"] = pending
    for queue, ids in by_queue.items():
        outcome = replay_dead(app, queue, ids)
        report.ids += outcome.replayed
        if outcome.not_found:
            report.skipped["dead_letter_gone"] = report.skipped.get("dead_letter_gone", 0) + len(
                outcome.not_found
            )


def _purge(app: Any, records: list[dict[str, Any]], report: BulkReport) -> None:
    store = app.jobstore
    ids = [r["id"] for r in records]
    outcomes = store.purge_many(ids)
    report.ids = [i for i, o in zip(ids, outcomes, strict=True) if o == "purged"]
    _count_skipped(report, [o for o in outcomes if o not in ("purged", "dead")])
    queue_of = {r["id"]: r.get("queue", "") for r in records}
    dead: dict[str, list[str]] = defaultdict(list)
    for job_id, outcome in zip(ids, outcomes, strict=True):
        if outcome == "dead":
            dead[queue_of[job_id]].append(job_id)
    for queue, dead_ids in dead.items():
        # The dead letters first: a record purged before its dead letter
        # would leave a message a later replay-all runs again.
        purge_dead(app, queue, dead_ids)
        dead_outcomes = store.purge_many(dead_ids, dead_too=True)
        report.ids += [i for i, o in zip(dead_ids, dead_outcomes, strict=True) if o == "purged"]


def _count_skipped(report: BulkReport, outcomes: list[str]) -> None:
    """Jobs that moved on between selection and action, by the state they were in."""
    for outcome, count in Counter(outcomes).items():
        report.skipped[outcome] = report.skipped.get(outcome, 0) + count


def replay_job(app: Any, job_id: str, payload: Any = None) -> dict[str, Any]:
    """Replay one failed job, with a corrected ``payload`` when given; its view afterwards.

    The job keeps its id; its previous run goes into ``history`` with the
    digest of the payload it ran with (never the payload). A job whose dead
    letter is gone (purged) can still be replayed with a payload.
    """
    store = app.jobstore
    try:
        record = store.get(job_id)
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    if record is None:
        raise JobNotFound(job_id)
    state = record.get("state", "")
    if state != "failed":
        raise NotReplayable(
            "job_not_replayable", f"the job is {state}; only failed jobs can be replayed", state
        )
    job_type = app.job_types.get(record.get("type", ""))
    checked = None
    if payload is not None:
        if job_type is None:
            raise NotReplayable(
                "job_type_unknown", f"job type {record.get('type')!r} is not enabled here", state
            )
        checked = check_payload(app, job_type, payload)
    queue = record.get("queue", "")
    outcome = replay_dead_waiting(app, queue, [job_id], {job_id: checked} if checked else None)
    if not outcome.replayed:
        if checked is None:
            raise NotReplayable(
                "payload_unavailable",
                "the job's dead letter is gone (purged), so its payload is too; "
                "replay it with a payload",
                state,
            )
        message = replacement_message(app, job_id, job_type, checked)
        replay(app, job_id, queue, message, {"payload_digest": None, "payload_replaced": True})
    try:
        current = store.get(job_id)
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    return public(current or record)
