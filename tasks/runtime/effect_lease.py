"""Keeps an effect's claim alive for as long as its run is performing it.

A claim has to outlast a slow effect (a webhook that answers after 20 s) and
yet lapse soon after its performer died (SIGKILL, an OOM kill, a lost
machine), so that a rerun can act without waiting for the job's whole time
limit. The answer BullMQ gives its job locks: a short lease that a thread of
the performing process extends every third of the lease. A dead performer
stops extending, and its claim lapses within one lease. A hung one is killed
by the job's hard time limit, which stops it extending too.

Written here because redis-py's ``Lock`` can extend a lease but keeps nothing
extending it, and our claim key also carries the effect's outcome.
"""

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from redis.exceptions import RedisError

logger = logging.getLogger("taskplane.job")


class LeaseKeeper:
    """Calls ``renew`` every third of ``lease_s`` until the block ends.

    Start it inside ``deferred_signals()``: a thread inherits its creator's
    signal mask, so termination signals cannot land in the keeper either.
    """

    def __init__(self, renew: Callable[[], bool], lease_s: float, what: str) -> None:
        self._renew = renew
        self._what = what
        self._interval = max(lease_s / 3, 0.05)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease {what}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        # Not waiting for a renewal stuck on an unreachable Redis: the thread is
        # a daemon, and a late renewal of a finished claim changes nothing.
        self._thread.join(timeout=1)

    def _keep(self) -> None:
        while not self._done.wait(self._interval):
            try:
                if not self._renew():
                    logger.error("the claim on %s lapsed while it was being performed", self._what)
                    return
            except RedisError as exc:
                logger.warning("could not extend the claim on %s: %s", self._what, exc)
