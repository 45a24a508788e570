"""``celery -A tasks beat`` with Taskplane's scheduler class (celeryconfig.beat_scheduler).

Celery's beat keeps its schedule in a Python file and a local shelve; two beat
processes fire everything twice (celery#1495). This class keeps Celery's
contract (``setup_schedule``, ``tick``, ``sync``, ``close``) and replaces the
rest: schedules are data in Redis (tasks/core/schedules.py), the leader of a
lease fires them (tasks/scheduler/lease.py), every fire goes through the
submission core with a deterministic id (tasks/core/schedule_fire.py). Run two
or three, on different hosts: the standbys poll the lease and fire nothing.

``tick`` is what beat's service loop calls; it returns how long to sleep. The
leader sleeps until the next due time, at most ``renew_s`` (it renews the lease
and rereads the schedules, so a change over HTTP takes effect at the next fire).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import beat
from redis.exceptions import RedisError

from tasks.core.schedule_fire import policy_for, reconcile, run_pass
from tasks.core.schedule_times import next_fire
from tasks.core.schedules import StoredSchedule
from tasks.core.telemetry import configure_tracing
from tasks.scheduler.lease import Lease

logger = logging.getLogger("taskplane.scheduler")

# The shortest sleep between passes: a due time a hair away is not busy-waited.
MIN_SLEEP_S = 0.02
# After a pass that could not fire something due (broker or Redis down), retry this soon.
RETRY_SLEEP_S = 0.25


class TaskplaneScheduler(beat.Scheduler):
    """Fires the schedules in Redis while it holds the leader lease."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        conf = app.conf
        self.lease_s = float(conf.taskplane_scheduler_lease_s)
        self.renew_s = float(conf.taskplane_scheduler_renew_s)
        self.fire_policy = policy_for(conf)
        self._lease: Lease | None = None
        self._leading = False
        kwargs["max_interval"] = self.renew_s
        super().__init__(app, *args, **kwargs)

    # -- Celery's scheduler contract ---------------------------------------------------

    def setup_schedule(self) -> None:
        """Apply the schedules declared in config (any scheduler may; it is idempotent)."""
        configure_tracing("taskplane-scheduler")
        declared = list(self.app.conf.taskplane_schedules or [])
        outcome = reconcile(self.app, self.app.schedules, declared)
        logger.info(
            "declared schedules: %d created, %d changed, %d removed, %d as they were",
            len(outcome.created),
            len(outcome.updated),
            len(outcome.removed),
            len(outcome.kept),
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass: keep or seek the lease; as leader, fire what is due. Seconds to sleep."""
        lease = self.lease
        if lease.due() or not lease.held():
            self._hold(lease)
        if not self._leading:
            return self.renew_s
        try:
            schedules = self.app.schedules.all()
        except RedisError as exc:
            logger.warning("cannot read schedules: %s", exc)
            return self.renew_s
        now = datetime.now(UTC)
        for stored in schedules:
            if not stored.enabled:
                continue
            if not self._still_leading():
                return self.renew_s
            try:
                run_pass(
                    self.app, self.app.schedules, stored, now, self.fire_policy, self._still_leading
                )
            except Exception:  # noqa: BLE001 - one schedule must not stop the others
                logger.exception("schedule %s: pass failed", stored.id)
        return self._sleep_for(schedules)

    def sync(self) -> None:
        """Nothing to write back: every fire was recorded in Redis as it happened."""

    def close(self) -> None:
        """A clean stop gives the lease up, so a standby takes over within ``renew_s``."""
        if self._lease is not None and self._leading:
            try:
                self._lease.release()
                logger.info("scheduler %s gave up the lease", self._lease.holder)
            except RedisError as exc:
                logger.warning("could not give up the lease (it expires): %s", exc)
        self._leading = False

    @property
    def schedule(self) -> dict[str, Any]:
        # Beat's own entries (celery.backend_cleanup and friends) are not run here.
        return {}

    @property
    def info(self) -> str:
        return (
            f"    . leader lease: {self.lease_s:g} s, renewed every {self.renew_s:g} s;"
            " schedules in Redis (GET /schedules)"
        )

    # -- the lease ---------------------------------------------------------------------

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            holder = f"beat@{socket.gethostname()}:{os.getpid()}"
            self._lease = Lease(self.app.jobstore.redis, holder, self.lease_s, self.renew_s)
        return self._lease

    def _hold(self, lease: Lease) -> None:
        was = self._leading
        try:
            self._leading = lease.hold()
        except RedisError as exc:
            self._leading = lease.held()  # by our own clock until it runs out
            logger.warning("cannot reach the lease: %s", exc)
        if self._leading != was:
            logger.info(
                "scheduler %s is %s", lease.holder, "the leader" if self._leading else "standing by"
            )

    def _still_leading(self) -> bool:
        lease = self.lease
        if lease.due():
            self._hold(lease)
        return self._leading and lease.held()

    def _sleep_for(self, schedules: list[StoredSchedule]) -> float:
        """Until the earliest next due time, at most ``renew_s``."""
        now = datetime.now(UTC)
        soonest = now + timedelta(seconds=self.renew_s)
        for stored in schedules:
            if not stored.enabled:
                continue
            schedule = stored.schedule
            after = max(stored.watermark, now - timedelta(seconds=self.fire_policy.grace_s))
            due = next_fire(schedule.cadence, after, schedule.start_at, schedule.end_at)
            if due is not None and due <= now:  # still due: its fire was not confirmed
                due = now + timedelta(seconds=RETRY_SLEEP_S)
            if due is not None and due < soonest:
                soonest = due
        return max((soonest - datetime.now(UTC)).total_seconds(), MIN_SLEEP_S)
