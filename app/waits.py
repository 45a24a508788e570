"""Waiting for a job to finish (``GET /jobs/<id>?wait_s=N``): slots and one poller per process.

A waiting request holds a gunicorn thread, so a process lets at most
``taskplane_wait_slots`` requests wait at once (gunicorn.conf.py gives it that
many threads on top of ``WEB_THREADS``, so submissions always keep theirs). A
request that finds no free slot is not queued: it answers at once with the
job as it is (the view says so in a header).

Waiters do not poll Redis each. One daemon thread per process, started on the
first wait, reads the state of every waited job in one pipelined round trip
every ``POLL_INTERVAL_S`` and wakes the waiters of jobs that reached a final
state (or whose record is gone); with nobody waiting it sleeps on a condition
and sends nothing. A waiter's own deadline does not depend on the thread: it
waits on its event with its own timeout, so a frozen Redis cannot hold it
past the deadline (the thread's calls end by the web's Redis timeout anyway).

At the deadline the view reads the record once more, unless the thread's last
poll failed or has been hanging for ``STUCK_AFTER_S``: then job storage is
taken as unavailable and the view answers 503 at once, as a plain GET would
after its failed read, rather than spending its Redis timeout past the deadline.

SIGTERM (gunicorn.conf.py) ends every wait of the process at once, and new
waits answer at once, so a stopping worker does not hold its graceful timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from tasks.core.jobstore import FINAL_STATES, JobStore, text

logger = logging.getLogger("taskplane.web")

POLL_INTERVAL_S = 0.05
# A poll still unanswered after this long counts as a failure (Redis frozen).
STUCK_AFTER_S = 0.5
ERROR_LOG_EVERY_S = 10.0

# How a wait ended.
FINAL = "final"  # the job reached a final state, or its record is gone
DEADLINE = "deadline"  # the wait ran out; the job is not final
NO_SLOT = "no_slot"  # every slot is taken, or the process is stopping: not waited
STOPPED = "stopped"  # the process began to stop during the wait
STORAGE_LOST = "storage_lost"  # the poller cannot read Redis: job storage unavailable


class _Waiter:
    __slots__ = ("done", "job_id")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.done = threading.Event()


class JobWaits:
    """One process's waiters: the slot count, the waited job ids, the polling thread."""

    def __init__(self, redis: Any, slots: int, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.redis = redis
        self.slots = max(0, int(slots))
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._have_waiters = threading.Condition(self._lock)
        self._waiters: dict[str, list[_Waiter]] = {}
        self._in_use = 0
        self._stopping = False
        self._pid: int | None = None
        self._poll_started: float | None = None
        self._last_poll_failed = False
        self._error_logged_at = 0.0
        self.polls = 0  # round trips made (tests check the thread idles)

    # -- the request's side ------------------------------------------------------------

    def wait(self, job_id: str, timeout_s: float) -> str:
        """Wait until ``job_id`` is final or ``timeout_s`` passed; how it ended (see above).

        The caller read the record first (so it exists and is not final) and reads
        it again after a wait that did not end with NO_SLOT or STORAGE_LOST.
        """
        deadline = time.monotonic() + timeout_s
        waiter = _Waiter(job_id)
        with self._lock:
            if self._stopping or self._in_use >= self.slots:
                return NO_SLOT
            self._in_use += 1
            self._waiters.setdefault(job_id, []).append(waiter)
            self._ensure_started()
            self._have_waiters.notify()
        try:
            woken = waiter.done.wait(max(0.0, deadline - time.monotonic()))
        finally:
            with self._lock:
                self._in_use -= 1
                self._remove(waiter)
                stopping = self._stopping
        if stopping:
            return STOPPED
        if woken:
            return FINAL
        return STORAGE_LOST if self.storage_suspect() else DEADLINE

    def in_use(self) -> int:
        with self._lock:
            return self._in_use

    def storage_suspect(self) -> bool:
        """Whether the poller's last round trip failed, or the current one hangs."""
        with self._lock:
            if self._last_poll_failed:
                return True
            started = self._poll_started
        return started is not None and time.monotonic() - started > STUCK_AFTER_S

    def stop(self) -> None:
        """End every wait now and refuse new ones (the process is stopping)."""
        with self._lock:
            self._stopping = True
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.done.set()

    def _remove(self, waiter: _Waiter) -> None:
        waiters = self._waiters.get(waiter.job_id)
        if waiters is None:
            return
        try:
            waiters.remove(waiter)
        except ValueError:
            return
        if not waiters:
            del self._waiters[waiter.job_id]

    # -- the polling thread ------------------------------------------------------------

    def _ensure_started(self) -> None:
        """Start this process's thread (a fork starts its own); called under the lock."""
        if self._pid == os.getpid():
            return
        thread = threading.Thread(target=self._run, name="taskplane-job-waits", daemon=True)
        # As tasks/core/sent_events: a thread of ours must never take a
        # process-directed signal (gunicorn's SIGTERM belongs to the main thread).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._pid = os.getpid()

    def _waited_ids(self) -> list[str]:
        """Block until somebody waits; then the ids waited for, and the poll marked started."""
        with self._lock:
            while not self._waiters:
                self._have_waiters.wait()
            self._poll_started = time.monotonic()
            return list(self._waiters)

    def _run(self) -> None:
        while True:
            ids = self._waited_ids()
            started = time.monotonic()
            try:
                states = self._states(ids)
            except RedisError as exc:
                with self._lock:
                    self._poll_started, self._last_poll_failed = None, True
                self._log_error(exc)
            except Exception:  # never let the thread die: waiters would only time out
                with self._lock:
                    self._poll_started, self._last_poll_failed = None, True
                logger.exception("job waits: polling failed")
            else:
                with self._lock:
                    self._poll_started, self._last_poll_failed = None, False
                    for job_id, state in zip(ids, states, strict=True):
                        if state is None or text(state) in FINAL_STATES:
                            for waiter in self._waiters.pop(job_id, ()):
                                waiter.done.set()
            self.polls += 1
            time.sleep(max(0.0, started + self.poll_interval_s - time.monotonic()))

    def _states(self, ids: list[str]) -> list[Any]:
        """Each job's state, in one round trip (None: the record is gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(JobStore.key(job_id), "state")
        return pipe.execute()

    def _log_error(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._error_logged_at >= ERROR_LOG_EVERY_S:
            self._error_logged_at = now
            logger.warning("job waits: cannot read job states from Redis: %s", exc)


def init_app(app: Any, redis: Any, slots: int) -> None:
    """Give the app its JobWaits (the polling thread starts on the first wait)."""
    app.extensions[EXTENSION] = JobWaits(redis, slots)


def job_waits(app: Any) -> JobWaits:
    return app.extensions[EXTENSION]


def stop_waits(app: Any) -> None:
    """SIGTERM: end every wait of this process at once (gunicorn.conf.py calls this)."""
    waits = getattr(app, "extensions", {}).get(EXTENSION)
    if waits is not None:
        waits.stop()


EXTENSION = "taskplane_job_waits"
