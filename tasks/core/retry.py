"""Retry policy: how many attempts a job gets and how long to wait between them."""

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter and a cap (AWS Architecture Blog, 2015).

    Full jitter spreads a thundering herd of retries after an outage over the
    whole window instead of synchronising them at its end.
    """

    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ValueError("need 0 < backoff_base_s <= backoff_cap_s")

    def delay_after(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        scale: float = 1.0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to wait after the given (1-based) failed attempt.

        A server's Retry-After is honoured as a floor, itself capped so a
        hostile or confused server cannot park a job for days.
        """
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(attempt - 1, 0))
        delay = uniform(0.0, ceiling) if self.jitter else ceiling
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.backoff_cap_s))
        return delay * scale

    def as_dict(self) -> dict:
        return asdict(self)
