"""Removing the records of refused submissions, now or, when Redis does not answer, later.

When the web answers 503 after writing a job's record (the broker did not
confirm, or Redis timed out), the record must go: the client was told the job
does not exist. A Redis that is frozen rather than down may still hold the
write and run it when it wakes, after the web gave up, and the removal may not
get through at that moment either. So removals that fail are kept and retried
in the background until Redis takes them; the tombstone they leave (see
tasks/core/jobstore, GONE_PREFIX) makes the order of a late write and its
removal irrelevant.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from redis.exceptions import RedisError

from tasks.core.jobstore import JobStore

logger = logging.getLogger("taskplane.forgetter")
# Ids kept for a later removal; past this many (a very long outage under load)
# the oldest are dropped, with a log line: bounded memory over completeness.
MAX_PENDING = 100_000
# Retries come at least this often, so records go within seconds of Redis waking.
RETRY_CAP_S = 5.0
BATCH = 1000


class Forgetter:
    """One per process (owned by the Celery app); a daemon thread retries what failed."""

    def __init__(self, store: JobStore):
        self.store = store
        self._pending: deque[tuple[str, str]] = deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()
        self._worker_pid: int | None = None

    def forget(self, job_ids: list[str], *, now: bool = True) -> None:
        """Remove the records of these fresh-id jobs (one create attempt each)."""
        self.forget_attempts(job_ids, [""] * len(job_ids), now=now)

    def forget_attempts(self, job_ids: list[str], tokens: list[str], *, now: bool = True) -> None:
        """Remove what these create attempts wrote; with ``now=False`` (Redis just failed),
        only later. A token names the attempt of a caller-given id ("" for fresh ids)."""
        if not job_ids:
            return
        if now:
            try:
                self.store.forget(job_ids, tokens)
                return
            except RedisError as exc:
                logger.warning("could not remove %d refused job(s) yet: %s", len(job_ids), exc)
        self._later(list(zip(job_ids, tokens, strict=True)))

    def pending(self) -> int:
        return len(self._pending)

    def _later(self, attempts: list[tuple[str, str]]) -> None:
        with self._lock:
            if len(self._pending) + len(attempts) > MAX_PENDING:
                logger.error("too many refused jobs to remove later; dropping the oldest")
            self._pending.extend(attempts)
            if self._worker_pid != os.getpid():
                self._worker_pid = os.getpid()
                threading.Thread(target=self._run, name="taskplane-forgetter", daemon=True).start()

    def _run(self) -> None:
        delay = 0.5
        while True:
            time.sleep(delay)
            with self._lock:
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                if not batch:
                    self._worker_pid = None
                    return
            try:
                self.store.forget([job_id for job_id, _ in batch], [token for _, token in batch])
                delay = 0.5
                logger.info("removed %d refused job record(s)", len(batch))
            except RedisError:
                with self._lock:
                    self._pending.extendleft(reversed(batch))
                delay = min(RETRY_CAP_S, delay * 2)
