"""The retention sweep: finished records go, with their search-index entries, when due.

A finished record's retention (per job type, TaskplaneCelery.retention_overrides)
is noted in the "expiry" index by the script that finished it; Redis's own
expiry cannot remove index entries, so each worker runs this sweep. Several
workers sweeping at once is harmless: each call is one atomic script over at
most ``SWEEP_CHUNK`` records. The records' own TTL, a day past retention,
backs the sweep up while no worker runs.
"""

import logging
import signal
import threading
import time
from typing import Any

from celery import bootsteps
from redis.exceptions import RedisError

from tasks.core.jobstore import SWEEP_CHUNK

logger = logging.getLogger("taskplane.retention")
SWEEP_INTERVAL_S = 10.0


class RetentionSweeper(bootsteps.StartStopStep):
    """A daemon thread in the worker's main process, sweeping every ``SWEEP_INTERVAL_S``."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        store = worker.app.jobstore
        # Signals stay with the main thread, which turns them into a warm shutdown.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread = threading.Thread(
                target=self._run, args=(store,), name="taskplane-retention", daemon=True
            )
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop(self, worker: Any) -> None:
        self._stop.set()

    def _run(self, store: Any) -> None:
        while not self._stop.wait(SWEEP_INTERVAL_S):
            sweep_due(store)


def sweep_due(store: Any, now: float | None = None) -> int:
    """Delete every record now past its retention; how many went."""
    deleted = 0
    try:
        while True:
            due, gone = store.sweep(time.time() if now is None else now)
            deleted += gone
            if due < SWEEP_CHUNK:
                break
    except RedisError as exc:
        logger.warning("retention sweep stopped: %s", exc)
    if deleted:
        logger.info("retention sweep deleted %d finished job records", deleted)
    return deleted
