"""Finding jobs: filters, cursors, and counts, answered from the indexes in Redis.

The indexes are sorted sets kept by the scripts that change records
(tasks/core/jobstore.py), so a listing agrees with the records and survives a
restart of every process. A query walks its smallest index, newest first, and
stops after a bounded number of entries: it never scans the keyspace. Used by
``GET /jobs``, ``GET /jobs/stats``, the bulk actions and ``flask jobs``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from tasks.core.errors import Unavailable
from tasks.core.jobstore import MAX_SCORE, index_key
from tasks.core.schema_types import Rfc3339
from tasks.core.submission import InvalidJob, public
from tasks.core.validation import validation_details

JobState = Literal["queued", "scheduled", "started", "retrying", "succeeded", "failed", "cancelled"]
STATES: tuple[str, ...] = JobState.__args__  # type: ignore[attr-defined]
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_TAG_FILTERS = 5
TAG_FILTER = r"^[A-Za-z0-9_.-]{1,64}:[^\x00-\x1f\x7f]{1,128}$"
_CURSOR_VERSION = "v1"
# What a cursor looks like (unpadded base64url); anything else is refused as is.
CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,200}")
TagFilter = Annotated[str, Field(pattern=TAG_FILTER)]


class JobFilter(BaseModel):
    """Which jobs: every given condition holds (tags too: each pair must be on the job)."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    type: str | None = Field(default=None, min_length=1, max_length=200)
    queue: str | None = Field(default=None, min_length=1, max_length=200)
    tag: list[TagFilter] = Field(
        default_factory=list,
        max_length=MAX_TAG_FILTERS,
        description=f"key:value pairs, at most {MAX_TAG_FILTERS}; a job matches when it has all",
    )
    created_after: Rfc3339 | None = Field(
        default=None, description="RFC 3339; jobs created at or after this time"
    )
    created_before: Rfc3339 | None = Field(
        default=None, description="RFC 3339; jobs created before this time"
    )

    def index_keys(self) -> list[str]:
        keys = []
        if self.state:
            keys.append(index_key("state", self.state))
        if self.type:
            keys.append(index_key("type", self.type))
        if self.queue:
            keys.append(index_key("queue", self.queue))
        for pair in self.tag:
            name, _, value = pair.partition(":")
            keys.append(index_key("tag", f"{name}={value}"))
        return keys

    def bounds(self) -> tuple[int, int]:
        """The score range (creation time in ms): [created_after, created_before)."""
        low = _ms(self.created_after) if self.created_after else 0
        high = _ms(self.created_before) - 1 if self.created_before else MAX_SCORE
        return low, high

    def with_state(self, state: str) -> JobFilter:
        return self.model_copy(update={"state": state})


def parse_filter(values: dict[str, Any], *, path: str = "") -> JobFilter:
    """A filter from query parameters or a JSON object; InvalidJob (422) names the field."""
    try:
        job_filter = JobFilter.model_validate(values)
    except ValidationError as exc:
        raise InvalidJob(
            "validation_failed", "the filter is invalid", validation_details(exc, prefix=path)
        ) from exc
    return job_filter


@dataclass(frozen=True)
class Page:
    jobs: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(position: tuple[int, str] | None) -> str | None:
    if position is None:
        return None
    raw = f"{_CURSOR_VERSION}:{position[0]}:{position[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """A cursor from ``next_cursor``; InvalidCursor when it is not one."""
    try:
        if not CURSOR_PATTERN.fullmatch(cursor):
            raise ValueError(cursor)
        padded = cursor + "=" * (-len(cursor) % 4)
        version, score, job_id = base64.urlsafe_b64decode(padded).decode().split(":", 2)
        if version != _CURSOR_VERSION or not job_id or len(job_id) > 64:
            raise ValueError(version)
        return int(score), job_id
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidCursor(cursor) from exc


class InvalidCursor(ValueError):
    """Not a cursor this server gave out (the caller answers 400)."""


def search(
    app: Any, job_filter: JobFilter, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page:
    """One page of jobs, newest first; ``next_cursor`` None when there are no more.

    A page may hold fewer than ``limit`` jobs and still have a cursor: the
    walk stops after a bounded number of index entries (a rare filter over
    many jobs), and the next page goes on from there.
    """
    low, high = job_filter.bounds()
    after = ""
    if cursor is not None:
        score, job_id = decode_cursor(cursor)
        if score < high:
            high, after = score, job_id
        elif score == high:
            after = job_id
    if high < low:
        return Page([], None)
    try:
        page = app.jobstore.search(
            job_filter.index_keys(), high=high, after=after, low=low, limit=limit
        )
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    return Page([public(r) for r in page.records], encode_cursor(page.position))


def matching(app: Any, job_filter: JobFilter, bound: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``bound`` jobs matching the filter, and whether more match beyond them."""
    found: list[dict[str, Any]] = []
    for page in _pages(app, job_filter):
        found += page.jobs
        if len(found) >= bound:
            more = len(found) > bound or page.next_cursor is not None
            return found[:bound], more
    return found, False


def _pages(app: Any, job_filter: JobFilter) -> Iterator[Page]:
    cursor = None
    while True:
        page = search(app, job_filter, limit=MAX_LIMIT, cursor=cursor)
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def stats(app: Any) -> dict[str, Any]:
    """Jobs per state, and per type and state, as the indexes count them (O(types × states))."""
    try:
        counts = app.jobstore.counts()
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    states = dict.fromkeys(STATES, 0)
    types: dict[str, dict[str, int]] = {}
    for (job_type, state), count in sorted(counts.items()):
        states[state] = states.get(state, 0) + count
        types.setdefault(job_type, {})[state] = count
    return {"states": states, "types": types, "total": sum(states.values())}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
