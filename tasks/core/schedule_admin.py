"""Managing schedules: the operations HTTP (app/schedules.py) and the CLI (app/cli.py) share.

Each takes the Celery app and client data, checks it through tasks/core/schedules.py,
writes through the app's ``ScheduleStore`` and answers the schedule as GET shows it
(``describe``). Neither caller adds rules of its own; they map the errors below.

Errors:

- ``InvalidSchedule`` (from tasks/core/schedules.py): the definition cannot be
  stored; ``problems`` name each field (a payload that does not fit its job type
  too: the core's ``InvalidJob`` is raised as an ``InvalidSchedule`` here);
- ``ScheduleNotFound``, ``ScheduleExists``, ``DeclaredInConfig``, ``TooManySchedules``
  (all ``ScheduleError``, with a stable ``code``);
- ``Unavailable``: Redis (``"job storage"``) or the broker did not answer. Every
  RedisError is raised as ``Unavailable("job storage")``, never as itself.

Schedules declared in config (origin "config") are changed in config: a PATCH or a
DELETE of one raises ``DeclaredInConfig``. Pausing, resuming and running one now are
operations, not definitions, and are allowed (a pause survives restarts until the
declaration itself changes, see ``reconcile``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from tasks.core.errors import unavailable_as_one_error
from tasks.core.schedule_fire import describe, run_now
from tasks.core.schedules import (
    MAX_SCHEDULES,
    InvalidSchedule,
    ScheduleStore,
    StoredSchedule,
    check_patch,
    check_schedule,
    recheck,
)
from tasks.core.submission import InvalidJob, Submitted

F = TypeVar("F", bound=Callable[..., Any])
# A page of GET /schedules (and ``schedule list``).
PAGE_DEFAULT = 100
PAGE_MAX = 1000
PAUSED_REASON = "paused by an operator"


class ScheduleError(Exception):
    """A schedule operation that cannot be done as asked; ``code`` is stable."""

    code = "schedule_error"

    def __init__(self, schedule_id: str, message: str) -> None:
        super().__init__(message)
        self.schedule_id = schedule_id
        self.message = message


class ScheduleNotFound(ScheduleError):
    code = "schedule_not_found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(schedule_id, f"no schedule with id {schedule_id!r}")


class ScheduleExists(ScheduleError):
    code = "schedule_exists"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(schedule_id, f"a schedule with id {schedule_id!r} exists")


class DeclaredInConfig(ScheduleError):
    code = "declared_in_config"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(
            schedule_id,
            f"schedule {schedule_id!r} is declared in config: change or remove it there "
            "(pause, resume and run work here)",
        )


class TooManySchedules(ScheduleError):
    code = "schedule_limit_reached"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(
            schedule_id, f"there are {MAX_SCHEDULES:,} schedules already (MAX_SCHEDULES)"
        )


def _operation(function: F) -> F:
    """RedisError as Unavailable("job storage"); the core's InvalidJob as InvalidSchedule."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except InvalidSchedule:
            raise
        except InvalidJob as exc:  # check_payload's, for a payload that does not fit
            raise InvalidSchedule(exc.code, exc.message, exc.problems, **exc.extra) from exc

    return unavailable_as_one_error(run)  # type: ignore[return-value]


def _store(app: Any) -> ScheduleStore:
    return app.schedules


def _get(app: Any, schedule_id: str) -> StoredSchedule:
    stored = _store(app).get(schedule_id)
    if stored is None:
        raise ScheduleNotFound(schedule_id)
    return stored


def _view(app: Any, schedule_id: str) -> dict[str, Any]:
    return describe(app, _store(app), _get(app, schedule_id))


@_operation
def create(app: Any, data: Any) -> dict[str, Any]:
    """A new schedule (origin "api") from client JSON; it fires from now on."""
    schedule, enabled = check_schedule(app, data)
    store = _store(app)
    if store.count() >= MAX_SCHEDULES:
        raise TooManySchedules(schedule.id)
    if not store.create(schedule, enabled=enabled, origin="api"):
        raise ScheduleExists(schedule.id)
    return _view(app, schedule.id)


@_operation
def change(app: Any, schedule_id: str, data: Any) -> dict[str, Any]:
    """PATCH: the fields given change; a timing change restarts the cadence from now.

    Resuming through ``enabled: true`` checks the payload against the job type as it
    is now, like ``resume``: ``check_patch`` builds the new definition through the
    registry, so a payload that no longer fits is refused (422) and nothing changes.
    """
    current = _get(app, schedule_id)
    if current.origin != "api":
        raise DeclaredInConfig(schedule_id)
    schedule, enabled = check_patch(app, current.schedule, data)
    restart = schedule.timing() != current.schedule.timing()
    outcome = _store(app).replace(schedule, restart=restart, enabled=enabled, expect_origin="api")
    if outcome == 0:
        raise ScheduleNotFound(schedule_id)
    if outcome < 0:
        raise DeclaredInConfig(schedule_id)
    return _view(app, schedule_id)


@_operation
def remove(app: Any, schedule_id: str) -> None:
    """Delete a schedule made over the API (its fires' jobs stay)."""
    if _get(app, schedule_id).origin != "api":
        raise DeclaredInConfig(schedule_id)
    if not _store(app).delete(schedule_id):
        raise ScheduleNotFound(schedule_id)


@_operation
def pause(app: Any, schedule_id: str) -> dict[str, Any]:
    """Stop firing (any origin); resuming fires from the next due time, no backfill."""
    if not _store(app).set_enabled(schedule_id, False, reason=PAUSED_REASON):
        raise ScheduleNotFound(schedule_id)
    return _view(app, schedule_id)


@_operation
def resume(app: Any, schedule_id: str) -> dict[str, Any]:
    """Fire again (any origin), once the payload still fits its job type as it is now.

    A payload that no longer fits raises InvalidSchedule and the schedule stays
    disabled, with the problem as its ``disabled_reason``.
    """
    stored = _get(app, schedule_id)
    store = _store(app)
    try:
        recheck(app, stored.schedule)
    except InvalidJob as exc:
        store.set_enabled(schedule_id, False, reason=_reason(exc))
        raise
    if not store.set_enabled(schedule_id, True):
        raise ScheduleNotFound(schedule_id)
    return _view(app, schedule_id)


@_operation
def run(app: Any, schedule_id: str) -> Submitted:
    """Fire now, out of the cadence (any origin, paused or not): the created job.

    A payload that no longer fits disables the schedule and raises InvalidSchedule;
    a broker or Redis that did not confirm raises Unavailable (no job exists).
    """
    return run_now(app, _store(app), _get(app, schedule_id))


@_operation
def show(app: Any, schedule_id: str) -> dict[str, Any]:
    return _view(app, schedule_id)


@_operation
def listing(app: Any, after: str = "", limit: int = PAGE_DEFAULT) -> dict[str, Any]:
    """A page of schedules in id order after ``after``; ``next_after`` is the next cursor."""
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be in [1, {PAGE_MAX}]")
    store = _store(app)
    ids = store.ids(after=after, limit=limit + 1)
    more = len(ids) > limit
    page = ids[:limit]
    schedules = [describe(app, store, stored) for stored in store.get_many(page)]
    return {"schedules": schedules, "next_after": page[-1] if more else None}


def _reason(exc: InvalidJob) -> str:
    problems = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in exc.problems)
    return f"{exc.message}: {problems}"[:1000]
