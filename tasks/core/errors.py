"""The failures the platform speaks of: a job handler's two kinds, and an outage.

Handlers raise ``TransientError`` or ``PermanentError`` instead of calling
Celery's retry machinery, so the plain functions stay testable and the retry
policy lives in one place (``tasks.runtime.task``). Any other exception is
treated as transient, like Sidekiq. Platform operations raise ``Unavailable``
when job storage or the broker did not answer.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from amqp.exceptions import AMQPError
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError


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


class Unavailable(Exception):
    """Job storage or the broker did not do what was asked; nothing was changed.

    The one error the platform's operations raise for an outage, whatever the
    client library said; the web answers it with 503 and Retry-After.
    """

    def __init__(self, what: str, cause: BaseException | None = None):
        super().__init__(f"{what} is unavailable")
        self.what = what
        self.__cause__ = cause


F = TypeVar("F", bound=Callable[..., Any])


def unavailable_as_one_error(operation: F) -> F:
    """Storage or broker failures of an operation surface as ``Unavailable``."""

    @functools.wraps(operation)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, **kwargs)
        except Unavailable:
            raise
        except RedisError as exc:
            raise Unavailable("job storage", exc) from exc
        except (OperationalError, AMQPError, OSError) as exc:
            raise Unavailable("the message broker", exc) from exc

    return guarded  # type: ignore[return-value]
