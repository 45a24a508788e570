"""When a schedule fires: cron and interval cadences, missed fires, fire ids and jitter.

Pure functions over aware UTC datetimes, no services and no clock of their own: the
scheduler passes "now" in. Every result is a function of the schedule's stored fields
and the arguments only, so any number of redundant schedulers on any hosts compute the
same due times, the same job id for each fire (``fire_job_id``) and the same jitter,
and the submission core turns a fire seen by three schedulers into one job.

Cron expressions are parsed and matched by cronsim (the evaluator healthchecks.io
uses, modelled on Debian's cron), but only on naive wall-clock times; the time zone is
applied here. cronsim's own zone handling is Debian's, which runs a time that did not
exist on the spring-forward day right after the change, and it loses fires where a
change is not a whole hour (Australia/Lord_Howe). This module keeps the rule of
issue 12, "a time that does not exist is skipped once, a time that occurs twice fires
once":

- A fire is an instant whose local wall-clock time (in the schedule's IANA zone)
  matches the expression. A wall-clock time that does not exist on the spring-forward
  day matches no instant, so it is skipped that once, not run late.
- A wall-clock time that occurs twice on the fall-back day fires once, at its first
  occurrence. The one exception is an expression whose hour field covers every hour
  (``0 * * * *``, ``*/15 * * * *``, ``0 0-23 * * *``): that is a cadence within the
  day, and the repeated hour is a real hour, so it fires again. Each UTC hour of
  ``0 * * * *`` fires exactly once and nothing goes quiet for an hour.

Interval cadences are a fixed grid in UTC anchored at the schedule's ``start_at``,
or at the Unix epoch when it has none. They never depend on when a scheduler
happened to look, so two schedulers that started at different times agree.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError

__all__ = [
    "Cadence",
    "DueScan",
    "FIRE_ID_NAMESPACE",
    "MISSED_POLICIES",
    "MissedPolicy",
    "ScheduleFieldError",
    "check_jitter_s",
    "check_window",
    "due_between",
    "fire_job_id",
    "jittered",
    "missed_fires",
    "next_fire",
    "scan_due",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
ONE_S = timedelta(seconds=1)

MAX_CRON_LENGTH = 256
# A year and a day. Rarer schedules are cron's job ("0 0 1 1 *"). The cap also keeps
# the arithmetic far from datetime's year-9999 limit.
MAX_INTERVAL_S = 366 * 86400
MAX_JITTER_S = 86400

CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Zone names that exist in the tz database but mean something host-specific or nothing:
# "localtime" is whatever the host's clock is set to, which would break the promise that
# every scheduler computes the same times.
_REFUSED_ZONES = frozenset({"localtime", "posixrules", "Factory"})

MissedPolicy = Literal["all", "last", "none"]
MISSED_POLICIES: tuple[MissedPolicy, ...] = ("all", "last", "none")

# The namespace of fire ids. NEVER change it (or the name format in fire_job_id): every
# fire already made would get a new id, so a scheduler upgraded mid-minute would fire
# the current due time a second time.
FIRE_ID_NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-5e7f-9a10-3c5d7e9f1b24")


class ScheduleFieldError(ValueError):
    """A schedule field holds something unusable; ``field`` names it for a 422.

    ``field`` is the schedule's own field name ("cron", "timezone", "interval_s",
    "start_at", "end_at", "jitter_s", "missed"), so the HTTP layer can answer with the
    same field the client sent, and ``reason`` says what is wrong without echoing the
    (possibly large) input back.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# --------------------------------------------------------------------------- cadence


@dataclass(frozen=True)
class Cadence:
    """How often a schedule fires: a 5-field cron expression in a zone, or an interval.

    Build one with ``Cadence.from_fields`` (the schedule's JSON fields) or directly,
    ``Cadence(cron="30 2 * * *", timezone="Europe/Berlin")`` /
    ``Cadence(interval_s=5)``. Construction validates, so an existing Cadence is
    always usable. ``timezone`` defaults to UTC and only affects cron; for an interval
    it is checked but has no effect, since an interval is elapsed time.
    """

    cron: str | None = None
    timezone: str = "UTC"
    interval_s: int | float | None = None
    # Derived at construction; not part of equality.
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _every_hour: bool = field(init=False, repr=False, compare=False, default=False)
    _interval_us: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if self.cron is not None and self.interval_s is not None:
            raise ScheduleFieldError("cron", "give either 'cron' or 'interval_s', not both")
        if self.cron is None and self.interval_s is None:
            raise ScheduleFieldError("cron", "give 'cron' (with 'timezone') or 'interval_s'")
        set_ = object.__setattr__  # frozen: normalised values are set once, here
        set_(self, "_zone", _zone(self.timezone))
        if self.cron is not None:
            expr, every_hour = _parse_cron(self.cron)
            set_(self, "cron", expr)
            set_(self, "_every_hour", every_hour)
        else:
            set_(self, "_interval_us", _interval_us(self.interval_s))

    @classmethod
    def from_fields(
        cls,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        interval_s: int | float | None = None,
    ) -> Cadence:
        """The cadence of a schedule's JSON fields; a missing ``timezone`` means UTC."""
        return cls(
            cron=cron, timezone="UTC" if timezone is None else timezone, interval_s=interval_s
        )

    @property
    def kind(self) -> Literal["cron", "interval"]:
        return "cron" if self.cron is not None else "interval"

    @property
    def repeats_in_fall_back_hour(self) -> bool:
        """Whether a repeated wall-clock hour fires twice (the hour field covers every hour)."""
        return self._every_hour

    def as_fields(self) -> dict[str, object]:
        """The schedule fields this cadence came from, normalised (for storage and GET)."""
        if self.cron is not None:
            return {"cron": self.cron, "timezone": self.timezone}
        return {"interval_s": self.interval_s}


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ScheduleFieldError("timezone", "must be an IANA time zone name, like 'Europe/Berlin'")
    if name in _REFUSED_ZONES or name not in _known_zones():
        raise ScheduleFieldError(
            "timezone", "unknown time zone; use an IANA name, like 'Europe/Berlin' or 'UTC'"
        )
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    # Membership, not just "ZoneInfo() loaded it": the lookup is case-insensitive on some
    # file systems and would accept "europe/berlin" on one host and not on another.
    return frozenset(available_timezones())


def _parse_cron(expr: object) -> tuple[str, bool]:
    """(the normalised expression, whether its hour field covers every hour)."""
    if not isinstance(expr, str):
        raise ScheduleFieldError("cron", "must be a string of 5 fields, like '30 2 * * *'")
    if len(expr) > MAX_CRON_LENGTH:
        raise ScheduleFieldError("cron", f"longer than {MAX_CRON_LENGTH} characters")
    parts = expr.split()
    if len(parts) == 1 and parts[0].startswith("@"):
        raise ScheduleFieldError(
            "cron", "aliases like '@hourly' are not supported; write the 5 fields ('0 * * * *')"
        )
    if len(parts) != 5:
        raise ScheduleFieldError(
            "cron",
            f"must have 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}",
        )
    normalised = " ".join(parts)
    try:
        probe = CronSim(normalised, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ScheduleFieldError("cron", _cronsim_reason(exc, parts)) from None
    try:
        next(probe)
    except StopIteration:
        raise ScheduleFieldError("cron", "matches no date in 50 years") from None
    return normalised, _covers_every_hour(parts[1])


def _cronsim_reason(exc: CronSimError, parts: list[str]) -> str:
    message = str(exc)  # cronsim says "Bad minute", "Bad day-of-month", ...
    for index, name in enumerate(CRON_FIELDS):
        if message == f"Bad {name}":
            value = parts[index]
            shown = value if len(value) <= 20 else value[:20] + "..."
            if name == "day-of-month" and _days_in_range(value):
                return f"day-of-month {shown!r} never occurs in the months given"
            return f"invalid {name} field {shown!r}"
    return "not a valid cron expression"


def _days_in_range(value: str) -> bool:
    """Whether a rejected day-of-month field only names days 1-31 (so no month has them)."""
    try:
        numbers = [int(n) for term in value.split(",") for n in term.split("-")]
    except ValueError:
        return False
    return all(1 <= n <= 31 for n in numbers)


def _covers_every_hour(hour_field: str) -> bool:
    first = datetime(2000, 1, 1)
    probe = CronSim(f"0 {hour_field} * * *", first - ONE_S)
    hours = {d.hour for d in itertools.islice(probe, 24) if d.date() == first.date()}
    return len(hours) == 24


def _interval_us(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleFieldError("interval_s", "must be a number of seconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise ScheduleFieldError("interval_s", "must be a finite number of seconds")
    if value < 1:
        raise ScheduleFieldError("interval_s", "must be at least 1 second")
    if value > MAX_INTERVAL_S:
        raise ScheduleFieldError(
            "interval_s", f"must be at most {MAX_INTERVAL_S} seconds; use cron for rarer schedules"
        )
    ms = Decimal(str(value)) * 1000
    if ms != ms.to_integral_value():
        # Due times are kept at millisecond precision (see fire_job_id).
        raise ScheduleFieldError("interval_s", "must be a whole number of milliseconds")
    return int(ms) * 1000


# ------------------------------------------------------------------- date arguments


def _utc(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ScheduleFieldError(name, "must be a date and time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleFieldError(name, "must include a UTC offset, like '2025-01-01T00:00:00Z'")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the first representable instant
        raise ScheduleFieldError(name, "is out of range") from None


def check_window(
    start_at: datetime | None, end_at: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The schedule's active window in UTC: fires at or after start_at and before end_at.

    An end at or before the start would make a schedule that can never fire, which is
    almost certainly a mistake, so it is refused (naming "end_at").
    """
    start = None if start_at is None else _utc(start_at, "start_at")
    end = None if end_at is None else _utc(end_at, "end_at")
    if start is not None and end is not None and end <= start:
        raise ScheduleFieldError("end_at", "must be later than start_at")
    return start, end


def _us_since_epoch(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_US


def _from_us(us: int) -> datetime | None:
    try:
        return EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return None


def _ceil_ms(moment: datetime) -> datetime:
    rest = moment.microsecond % 1000
    return moment if rest == 0 else moment + timedelta(microseconds=1000 - rest)


# --------------------------------------------------------------------- fire times


def next_fire(
    cadence: Cadence,
    after: datetime,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> datetime | None:
    """The first due time strictly after ``after`` inside [start_at, end_at), in UTC.

    None when the schedule has ended (or a cron expression matches nothing more).
    Strictly after, so a scheduler that keeps the last due time it handled as its
    watermark gets the following one from ``next_fire(cadence, watermark)``. Pass the
    schedule's own start_at every time: it is also the anchor of an interval's grid.
    """
    return next(_fires(cadence, _utc(after, "after"), start_at, end_at), None)


@dataclass(frozen=True)
class DueScan:
    """The fires due in a window: the newest ``limit`` of them, and how many there were."""

    fires: tuple[datetime, ...]
    total: int

    @property
    def dropped(self) -> int:
        """Due in the window but beyond the limit (the oldest ones)."""
        return self.total - len(self.fires)


def scan_due(
    cadence: Cadence,
    since: datetime,
    until: datetime,
    limit: int,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> DueScan:
    """The fires due in (since, until]: the newest ``limit`` of them, oldest first, and the count.

    The newest, because every missed-fire policy wants them: "last" takes the newest
    one, and a bounded "all" drops the stalest rather than replaying an outage from its
    start. The count is what the schedule's ``missed`` counter needs. The cost is
    linear in the number of fires in the window for cron (arithmetic for intervals), so
    bound ``since`` by how far back the scheduler is willing to look.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("limit must be a whole number >= 0")
    lower, upper = _utc(since, "since"), _utc(until, "until")
    if upper <= lower:
        return DueScan((), 0)
    if cadence.kind == "interval":
        return _interval_scan(cadence, lower, upper, limit, start_at, end_at)
    newest: deque[datetime] = deque(maxlen=limit)
    total = 0
    for due in _fires(cadence, lower, start_at, end_at):
        if due > upper:
            break
        newest.append(due)
        total += 1
    return DueScan(tuple(newest), total)


def due_between(
    cadence: Cadence,
    since: datetime,
    until: datetime,
    limit: int,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> list[datetime]:
    """The newest ``limit`` fires due in (since, until], oldest first (see ``scan_due``)."""
    return list(scan_due(cadence, since, until, limit, start_at, end_at).fires)


def missed_fires(policy: str, due: Sequence[datetime], bound: int | None = None) -> list[datetime]:
    """Which of the missed due times (oldest first) to fire now, per the schedule's policy.

    ``due`` holds the fires the scheduler considers missed, that is, late beyond its
    grace (a fire that is merely due now is not missed and fires under every policy):
    "all" fires them, at most the newest ``bound``; "last" fires only the newest,
    so a job that summarises "the latest state" runs once after an outage; "none"
    fires none. What is not fired is the caller's to count as missed.
    """
    if policy not in MISSED_POLICIES:
        raise ScheduleFieldError("missed", f"must be one of {', '.join(MISSED_POLICIES)}")
    fires = list(due)
    if policy == "none" or not fires:
        return []
    if policy == "last":
        return fires[-1:]
    if bound is not None:
        if bound < 0:
            raise ValueError("bound must be >= 0")
        return fires[len(fires) - bound :] if bound else []
    return fires


def _fires(
    cadence: Cadence, after: datetime, start_at: datetime | None, end_at: datetime | None
) -> Iterator[datetime]:
    """Due times strictly after ``after`` in [start_at, end_at), ascending, in UTC."""
    start, end = check_window(start_at, end_at)
    if cadence.kind == "interval":
        fires = _interval_fires(cadence, after, start)
    else:
        # A fire exactly at start_at counts; cron fires are on whole seconds.
        lower = after if start is None or start <= after else start - ONE_US
        fires = _cron_fires(cadence, lower)
    for due in fires:
        if end is not None and due >= end:
            return
        yield due


def _interval_grid(start: datetime | None) -> tuple[int, bool]:
    """(anchor in µs since the epoch, whether the grid begins at the anchor)."""
    if start is None:
        return 0, False
    return _us_since_epoch(_ceil_ms(start)), True


def _interval_fires(
    cadence: Cadence, after: datetime, start: datetime | None
) -> Iterator[datetime]:
    anchor, bounded = _interval_grid(start)
    step = cadence._interval_us
    k = (_us_since_epoch(after) - anchor) // step + 1
    if bounded:
        k = max(k, 0)
    while (due := _from_us(anchor + k * step)) is not None:
        yield due
        k += 1


def _interval_scan(
    cadence: Cadence,
    lower: datetime,
    upper: datetime,
    limit: int,
    start_at: datetime | None,
    end_at: datetime | None,
) -> DueScan:
    start, end = check_window(start_at, end_at)
    anchor, bounded = _interval_grid(start)
    step = cadence._interval_us
    first = (_us_since_epoch(lower) - anchor) // step + 1
    if bounded:
        first = max(first, 0)
    top = _us_since_epoch(upper)
    if end is not None:
        top = min(top, _us_since_epoch(end) - 1)
    last = (top - anchor) // step
    total = max(0, last - first + 1)
    ks = range(max(first, last - limit + 1), last + 1) if limit else range(0)
    fires = tuple(d for k in ks if (d := _from_us(anchor + k * step)) is not None)
    return DueScan(fires, total)


def _cron_fires(cadence: Cadence, after: datetime) -> Iterator[datetime]:
    """Instants after ``after`` whose local wall-clock time matches, by the module's DST rule.

    cronsim is used only on naive wall-clock times, where it is plain calendar
    matching; the zone is applied here. (cronsim's own zone handling steps through UTC
    assuming hour-long hours and loses fires where a change is not a whole hour, as in
    Australia/Lord_Howe; tests/unit/test_schedule_times.py's oracle shows it.)

    Every real wall-clock time has a first occurrence (fold 0); a repeated one also has
    a second (fold 1). Both maps from wall-clock time to instant are increasing, so the
    first occurrences of the matching times, in order, are already in time order; that
    is the whole answer unless the hour field covers every hour, when the second
    occurrences, also in order, are merged in. A wall-clock time that does not exist has
    no occurrence and is skipped.
    """
    zone = cadence._zone
    pending: list[datetime] = []  # second occurrences, until it is their turn
    try:
        wall = after.astimezone(zone).replace(tzinfo=None, fold=0)
        if cadence._every_hour:
            # A fall-back shortly after `after` brings back wall-clock times before `wall`.
            wall -= _coming_setback(after, zone)
        for candidate in CronSim(str(cadence.cron), wall - ONE_US):
            first = candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if first.astimezone(zone).replace(tzinfo=None) != candidate:
                continue  # does not exist in this zone: skipped
            while pending and pending[0] <= first:
                yield heapq.heappop(pending)
            if first > after:
                yield first
            if cadence._every_hour:
                second = candidate.replace(tzinfo=zone, fold=1).astimezone(UTC)
                if second != first and second > after:
                    heapq.heappush(pending, second)
    except OverflowError:  # near datetime's year 9999
        pass
    while pending:
        yield heapq.heappop(pending)


def _coming_setback(moment: datetime, zone: ZoneInfo) -> timedelta:
    """How far before ``moment``'s wall-clock time a coming fall-back sets the clock.

    Zero unless the clock goes back within the next day by more than the time left
    until it does. The offset is sampled every 3 hours (since 1970 no zone has had two
    changes less than 6 hours apart; the largest setback was 7 hours, in
    Antarctica/Vostok in 1994) and the change found by bisection, so a scheduler pays
    for the look-back only in the hour before a fall-back.
    """

    def offset(at: datetime) -> timedelta:
        return at.astimezone(zone).utcoffset() or timedelta(0)

    now = offset(moment)
    lo = moment
    for k in range(1, 9):
        hi = moment + timedelta(hours=3 * k)
        if offset(hi) < now:
            while hi - lo > ONE_S:
                mid = lo + (hi - lo) / 2
                if offset(mid) < now:
                    hi = mid
                else:
                    lo = mid
            reach = (now - offset(hi)) - (hi - moment)
            return max(timedelta(0), reach + timedelta(minutes=1))
        lo = hi
    return timedelta(0)


# ------------------------------------------------------------------ ids and jitter


def _due_text(due: datetime) -> str:
    """The due time in UTC at millisecond precision, a fixed 24 characters."""
    moment = _utc(due, "due").replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"  # truncates, pads the year


def fire_job_id(schedule_id: str, due: datetime) -> str:
    """The job id of one fire: a UUID5 of the schedule id and the due time.

    Deterministic so that every scheduler that sees the same fire submits the same job
    id, and the submission core creates that job once (the exactly-once promise with
    redundant schedulers rests on this). The due time enters in UTC at millisecond
    precision: the same instant written with another offset, or stored and read back
    with its microseconds lost, gives the same id. The due time always ends in a fixed
    24 characters, so no schedule id and due time can produce the same name as another
    pair. The namespace is a constant (``FIRE_ID_NAMESPACE``) and must never change.
    """
    if not isinstance(schedule_id, str) or not schedule_id:
        raise ValueError("schedule_id must be a non-empty string")
    return str(uuid.uuid5(FIRE_ID_NAMESPACE, f"{schedule_id}@{_due_text(due)}"))


def check_jitter_s(value: object) -> float:
    """A schedule's ``jitter_s`` (0 for none), or a ScheduleFieldError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleFieldError("jitter_s", "must be a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise ScheduleFieldError("jitter_s", "must be a finite number of seconds >= 0")
    if value > MAX_JITTER_S:
        raise ScheduleFieldError("jitter_s", f"must be at most {MAX_JITTER_S} seconds")
    return float(value)


def jittered(due: datetime, jitter_s: float, schedule_id: str) -> datetime:
    """When to run the fire due at ``due``: up to ``jitter_s`` later, the same on every host.

    Jitter spreads schedules that share a due time (every "0 * * * *" on the hour) so
    they do not all hit their targets at once. It is derived from a hash of the schedule
    id and the due time, not drawn at random, so every scheduler computes the same run
    time for a fire. The offset is a whole number of milliseconds in [0, jitter_s).
    The fire's job id stays ``fire_job_id(schedule_id, due)``: the due time, not the
    jittered one, so changing jitter_s never re-fires a due time.
    """
    span_ms = round(check_jitter_s(jitter_s) * 1000)
    moment = _utc(due, "due")
    if span_ms == 0:
        return moment
    digest = hashlib.sha256(f"{schedule_id}@{_due_text(moment)}".encode()).digest()
    return moment + timedelta(milliseconds=int.from_bytes(digest[:8], "big") % span_ms)
