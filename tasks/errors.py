"""The two kinds of failure a job handler can report.

Handlers raise these instead of calling Celery's retry machinery, so the
plain functions stay testable and the retry policy lives in one place
(``tasks.base``). Any other exception is treated as transient, like Sidekiq.
"""


class TransientError(Exception):
    """The attempt failed but a later one may succeed (5xx, timeout, lost connection)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Retrying cannot help (a 4xx answer, a refused recipient): fail at once."""


class EffectInProgress(TransientError):
    """Another run of this job is performing the effect right now.

    Not a failure of this attempt: the job waits (``retry_after`` is what is left
    of the other run's claim) without spending its attempt budget.
    """
