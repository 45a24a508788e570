"""Outbound HTTP for job families: what an answer means for the retry policy.

Shared by the families that fetch or post over HTTP (webhooks, logs) so
that none of them imports another.
"""

import time
from email.utils import parsedate_to_datetime
from typing import Any

from tasks.core.errors import PermanentError, TransientError
from tasks.core.netpolicy import UrlNotAllowed, policy_for

# Answers worth another attempt: the server is overloaded, slow or broken now.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def ensure_allowed(url: str, settings: Any) -> None:
    """Check the URL policy again where the connection is made (names can be re-pointed)."""
    try:
        policy_for(settings).check_url(url)
    except UrlNotAllowed as exc:
        raise PermanentError(f"URL not allowed: {exc}") from exc


def classify(status: int, retry_after_header: str | None) -> None:
    """Raise unless the status means delivered (2xx)."""
    if 200 <= status < 300:
        return
    if status in RETRYABLE_STATUS or status >= 500:
        raise TransientError(
            f"target answered {status}", retry_after=parse_retry_after(retry_after_header)
        )
    raise PermanentError(f"target answered {status}; not retrying a client error")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
