"""What a handler may know of its run, and the run-once protocol for its side effects.

A job can run again after it acted (its worker died before the ack, Redis
was down when it recorded success) or, briefly, twice at once. ``once``
claims an effect in Redis before it happens and records its outcome the
moment it happens; the claim is a lease its performer keeps extending
(tasks/runtime/effect_lease.py).
"""

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError

from tasks.core.errors import EffectInProgress
from tasks.core.jobstore import utcnow
from tasks.runtime.effect_lease import LeaseKeeper

if TYPE_CHECKING:
    import httpx

    from tasks.core.jobstore import JobStore

T = TypeVar("T")
logger = logging.getLogger("taskplane.job")
# A handler may report progress in a tight loop: at most one write per job
# this often (the last report, done == total, is always written).
PROGRESS_INTERVAL_S = 0.25
PROGRESS_MESSAGE_MAX = 200


@dataclass(frozen=True)
class JobContext:
    """What a handler may know about the run it is part of."""

    job_id: str
    attempt: int
    settings: Any  # the Celery app's configuration (taskplane_* keys)
    store: "JobStore | None" = None
    # How long a claim on an effect lasts unless its performer extends it (see
    # tasks/runtime/effect_lease): how soon a rerun may act after its performer died.
    lease_s: float = 30
    # The worker process's pooled HTTP client, built on first use (see
    # tasks/core/http_client); None outside a worker.
    http: "Callable[[], httpx.Client] | None" = None
    # When this run last wrote its progress (monotonic seconds); see ``progress``.
    _progress_written: list[float] = field(default_factory=list, repr=False, compare=False)

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> bool:
        """Show how far this run got (``GET /jobs/<id>`` shows it as ``progress``).

        Throttled to one write per ``PROGRESS_INTERVAL_S`` per job, so a loop
        that reports every item does not flood Redis; a report in between is
        skipped unless it is the last (``done == total``). Returns whether it
        was written. Progress is information, never the job's outcome: a Redis
        error is logged and the job goes on.
        """
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            raise ValueError(f"progress: done must be a whole number >= 0, not {done!r}")
        if total is not None and (
            isinstance(total, bool) or not isinstance(total, int) or total < done
        ):
            raise ValueError(f"progress: total must be a whole number >= done, not {total!r}")
        now = time.monotonic()
        last = self._progress_written[-1] if self._progress_written else None
        final = total is not None and done == total
        if self.store is None or (
            last is not None and now - last < PROGRESS_INTERVAL_S and not final
        ):
            return False
        report = {"done": done, "total": total, "updated_at": utcnow()}
        if message is not None:
            report["message"] = str(message)[:PROGRESS_MESSAGE_MAX]
        self._progress_written[:] = [now]
        try:
            return self.store.progress(self.job_id, self.attempt, report)
        except RedisError as exc:
            logger.warning("could not record progress of job %s: %s", self.job_id, exc)
            return False

    def http_client(self) -> "AbstractContextManager[httpx.Client]":
        """``with context.http_client() as client``: the shared pool, or a client of its own."""
        if self.http is not None:
            return nullcontext(self.http())
        import httpx

        return httpx.Client(follow_redirects=False)

    def once(self, effect: str, perform: Callable[[], T]) -> T:
        """Run ``perform`` unless this job already produced ``effect``; return its outcome.

        A job can run again after it acted (its worker died before the ack,
        Redis was down when it recorded success) or, briefly, twice at once (a
        publish retried after a lost confirm, a broker that redelivered a
        message whose worker is still running it). The effect is claimed
        before it is performed and its outcome recorded the moment it happens:
        a rerun returns the recorded outcome, and a run that finds the effect
        being performed elsewhere waits for that run instead of acting in
        parallel. Failures release the claim, so a retry may act.
        """
        if self.store is None:
            return perform()
        store, lease = self.store, int(self.lease_s)
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        claim = store.claim_effect(self.job_id, effect, token, lease)
        if claim.done:
            logger.info("job %s already did %s; not doing it again", self.job_id, effect)
            return claim.outcome
        if not claim.claimed:
            raise EffectInProgress(
                f"{effect} is in progress in another run of this job ({claim.holder});"
                f" waiting for it",
                retry_after=claim.expires_in_s,
            )
        # Termination and soft-time-limit signals wait until the outcome is
        # recorded: a run stopped between acting and recording would make the
        # next run act again. (SIGKILL cannot wait; the claim it leaves behind
        # lapses within a lease, and a rerun then acts.)
        with (
            deferred_signals(),
            LeaseKeeper(
                lambda: store.renew_effect(self.job_id, effect, token, lease),
                lease,
                f"{self.job_id}:{effect}",
            ),
        ):
            try:
                outcome = perform()
            except Exception:
                # Raised by the effect itself, so it did not happen: a retry may act.
                store.release_effect(self.job_id, effect, token)
                raise
            store.record_effect(self.job_id, effect, outcome)
        return outcome


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGTERM, SIGINT, SIGQUIT and SIGUSR1 (Celery's soft time limit) until the block ends.

    Blocking them in this thread is not enough: the kernel hands a
    process-directed signal to any thread that does not block it (an exporter
    or client library may have started one we do not control), and Python
    then runs the handler in the main thread at once. So on the main thread
    the Python handlers are also swapped for one that only notes the signal,
    and what was noted is raised again, under the real handler, when the
    block ends. Off the main thread Python never runs handlers, so the mask
    alone holds.
    """
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    noted: list[int] = []
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in HELD_SIGNALS:
            # None: a handler installed outside Python, which cannot be put back.
            if signal.getsignal(signum) is not None:
                handlers[signum] = signal.signal(signum, lambda signum, _: noted.append(signum))
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        for signum in dict.fromkeys(noted):
            signal.raise_signal(signum)
