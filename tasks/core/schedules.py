"""Schedules as data: what one is, how it is checked, and where it lives (Redis).

A schedule is a definition (job type, payload, cadence, policies, window) plus the
state its fires leave: a **watermark** (the due time handled last), counts, the
last fires, and the lag of each fire. The definition is checked here against the
registry when it is created or changed, so a schedule that fires garbage cannot be
stored. The scheduler (tasks/scheduler) and "run now" fire through the submission
core (tasks/core/schedule_fire.py); this module never publishes.

Redis layout (all keys under ``taskplane:schedule``):

- ``taskplane:schedule:<id>``: a hash. ``spec`` is the definition as JSON,
  ``enabled``, ``origin`` ("api" or "config"), ``declared`` (the fingerprint of
  the config declaration it came from), ``watermark`` (ms since the epoch),
  ``fired``/``skipped``/``missed``, ``last_job``, ``disabled_reason``, ``lag:<i>``
  bucket counts with ``lag_sum``/``lag_count``.
- ``taskplane:schedules``: a sorted set of ids (score 0), read in id order.
- ``taskplane:schedule-fires:<id>``: the newest fires as JSON, newest first.

Every fire is recorded by a compare-and-set on the watermark (``record``): of any
number of schedulers that handled the same due time, one records it, so counts and
the fire list are exact however many schedulers ran.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
)

from tasks.core.jobstore import rfc3339, text
from tasks.core.schedule_times import (
    Cadence,
    ScheduleFieldError,
    check_jitter_s,
    check_window,
)
from tasks.core.schema_types import Rfc3339, Tags
from tasks.core.submission import InvalidJob, check_payload
from tasks.core.validation import validate_json_payload, validation_details

SCHEDULE_PREFIX = "taskplane:schedule:"
SCHEDULE_INDEX = "taskplane:schedules"
FIRES_PREFIX = "taskplane:schedule-fires:"
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# Fires kept per schedule for GET (last_fires).
KEPT_FIRES = 20
# At most this many schedules; each is read on every scheduler pass.
MAX_SCHEDULES = 10_000
# Fire lag buckets, seconds (the histogram taskplane_schedule_fire_lag_seconds).
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
COUNTS = ("fired", "skipped", "missed")
MissedPolicy = Literal["all", "last", "none"]
OverlapPolicy = Literal["allow", "skip"]
# Fields of a definition that decide when it fires: changing one restarts the
# watermark at "now" (the new cadence does not backfill the old one's past).
TIMING_FIELDS = ("cron", "interval_s", "timezone", "start_at", "end_at")


class ScheduleIn(BaseModel):
    """A schedule as a client writes it (POST /schedules, config declarations)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=ID_PATTERN,
        description="a slug: lowercase letters, digits, '.', '_' and '-', at most 64",
    )
    type: str = Field(min_length=1, max_length=200, description="a job type, see /job-types")
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    tags: Tags | None = Field(
        default=None,
        description="tags of every job it fires, beside schedule and due_at (which win)",
    )
    cron: str | None = Field(
        default=None,
        max_length=256,
        description="5 fields (minute hour day-of-month month day-of-week); or give interval_s",
    )
    interval_s: float | None = Field(
        default=None, description="fire every this many seconds (>= 1); or give cron"
    )
    timezone: str = Field(default="UTC", description="IANA zone the cron fields are read in")
    enabled: bool = True
    missed: MissedPolicy = Field(
        default="last",
        description="fires missed while no scheduler ran: all (bounded), last, or none",
    )
    overlap: OverlapPolicy = Field(
        default="allow", description="skip: do not fire while the previous fire's job runs"
    )
    jitter_s: float = Field(default=0, ge=0, description="run each fire up to this much later")
    start_at: Rfc3339 | None = Field(default=None, description="no fire before this")
    end_at: Rfc3339 | None = Field(default=None, description="no fire at or after this")


class SchedulePatch(BaseModel):
    """PATCH /schedules/<id>: any definition field but the id; null clears start/end."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(default=None, min_length=1, max_length=200)
    payload: dict[str, JsonValue] | None = None
    tags: Tags | None = None
    cron: str | None = Field(default=None, max_length=256)
    interval_s: float | None = None
    timezone: str | None = None
    enabled: bool | None = None
    missed: MissedPolicy | None = None
    overlap: OverlapPolicy | None = None
    jitter_s: float | None = Field(default=None, ge=0)
    start_at: Rfc3339 | None = None
    end_at: Rfc3339 | None = None


class InvalidSchedule(InvalidJob):
    """A schedule definition that cannot be stored (a 422 naming the field)."""


@dataclass(frozen=True)
class Schedule:
    """A checked definition: every schedule in Redis is one of these."""

    id: str
    type: str
    payload: dict[str, Any]
    cadence: Cadence
    missed: str = "last"
    overlap: str = "allow"
    jitter_s: float = 0.0
    start_at: datetime | None = None
    end_at: datetime | None = None
    tags: dict[str, str] | None = None

    def as_fields(self) -> dict[str, Any]:
        """The definition as JSON fields (stored, returned, compared)."""
        fields: dict[str, Any] = {"id": self.id, "type": self.type, "payload": self.payload}
        if self.tags:
            fields["tags"] = dict(self.tags)
        fields.update(self.cadence.as_fields())
        fields.update(
            missed=self.missed,
            overlap=self.overlap,
            jitter_s=self.jitter_s,
            start_at=None if self.start_at is None else rfc3339(self.start_at),
            end_at=None if self.end_at is None else rfc3339(self.end_at),
        )
        return fields

    def timing(self) -> tuple[Any, ...]:
        fields = self.as_fields()
        return tuple(fields.get(name) for name in TIMING_FIELDS)


@dataclass
class StoredSchedule:
    """A schedule as Redis holds it: the definition and what its fires left."""

    schedule: Schedule
    enabled: bool
    origin: str
    declared: str
    watermark_ms: int
    created_at: str
    updated_at: str
    last_job: str | None = None
    disabled_reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    lag_buckets: list[int] = field(default_factory=list)
    lag_sum: float = 0.0

    @property
    def id(self) -> str:
        return self.schedule.id

    @property
    def watermark(self) -> datetime:
        return datetime.fromtimestamp(self.watermark_ms / 1000, UTC)


# -- checking -----------------------------------------------------------------------


def _field_problem(exc: ScheduleFieldError) -> InvalidSchedule:
    return InvalidSchedule(
        "validation_failed",
        f"{exc.field}: {exc.reason}",
        [{"path": exc.field, "type": "invalid_schedule", "message": exc.reason}],
    )


def check_schedule(app: Any, data: Any) -> tuple[Schedule, bool]:
    """A new schedule from client JSON: (the definition, enabled). Raises InvalidSchedule."""
    try:
        parsed = validate_json_payload(ScheduleIn, data)
    except ValidationError as exc:
        raise InvalidSchedule(
            "validation_failed", "the schedule is invalid", validation_details(exc)
        ) from exc
    return _build(app, parsed.model_dump(exclude={"enabled"})), parsed.enabled


def check_patch(app: Any, current: Schedule, data: Any) -> tuple[Schedule, bool | None]:
    """``current`` changed by a PATCH body: (the new definition, enabled or None)."""
    try:
        patch = validate_json_payload(SchedulePatch, data)
    except ValidationError as exc:
        raise InvalidSchedule(
            "validation_failed", "the change is invalid", validation_details(exc)
        ) from exc
    given = patch.model_dump(exclude_unset=True)
    enabled = given.pop("enabled", None)
    fields = _parsed_fields(current)
    if given.get("cron") is not None:
        fields.pop("interval_s", None)
    if given.get("interval_s") is not None:
        fields.pop("cron", None)
    for name, value in given.items():
        if value is None and name not in ("start_at", "end_at"):
            raise InvalidSchedule(
                "validation_failed",
                f"{name} cannot be null",
                [{"path": name, "type": "null", "message": "cannot be null"}],
            )
        fields[name] = value
    return _build(app, fields), enabled


def recheck(app: Any, schedule: Schedule) -> None:
    """Whether a stored definition still fits its job type (whose schema may have changed)."""
    _build(app, _parsed_fields(schedule))


def _parsed_fields(schedule: Schedule) -> dict[str, Any]:
    fields = schedule.as_fields()
    fields["start_at"], fields["end_at"] = schedule.start_at, schedule.end_at
    return fields


def _build(app: Any, fields: dict[str, Any]) -> Schedule:
    job_type = app.job_types.get(fields["type"])
    if job_type is None:
        message = f"no job type named {fields['type']!r}"
        raise InvalidSchedule(
            "unknown_job_type",
            message,
            [{"path": "type", "type": "unknown_job_type", "message": message}],
            known=sorted(app.job_types),
        )
    try:
        payload = check_payload(app, job_type, fields.get("payload") or {})
    except InvalidJob as exc:
        raise InvalidSchedule(exc.code, exc.message, exc.problems, **exc.extra) from exc
    try:
        interval = fields.get("interval_s")
        if isinstance(interval, float) and interval.is_integer():
            interval = int(interval)
        cadence = Cadence.from_fields(
            cron=fields.get("cron"), timezone=fields.get("timezone"), interval_s=interval
        )
        start, end = check_window(fields.get("start_at"), fields.get("end_at"))
        jitter = check_jitter_s(fields.get("jitter_s") or 0)
    except ScheduleFieldError as exc:
        raise _field_problem(exc) from None
    return Schedule(
        id=fields["id"],
        type=job_type.name,
        payload=payload,
        cadence=cadence,
        missed=fields.get("missed") or "last",
        overlap=fields.get("overlap") or "allow",
        jitter_s=jitter,
        start_at=start,
        end_at=end,
        tags=fields.get("tags") or None,
    )


def from_fields(fields: Mapping[str, Any]) -> Schedule:
    """A stored definition back (it was checked when stored; the registry is not consulted)."""
    return Schedule(
        id=fields["id"],
        type=fields["type"],
        payload=fields.get("payload") or {},
        cadence=Cadence.from_fields(
            cron=fields.get("cron"),
            timezone=fields.get("timezone"),
            interval_s=fields.get("interval_s"),
        ),
        missed=fields.get("missed", "last"),
        overlap=fields.get("overlap", "allow"),
        jitter_s=float(fields.get("jitter_s") or 0),
        start_at=_datetime(fields.get("start_at")),
        end_at=_datetime(fields.get("end_at")),
        tags=fields.get("tags") or None,
    )


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def fingerprint(declaration: Mapping[str, Any]) -> str:
    """The identity of a config declaration: reconciling applies it only when it changed."""
    canonical = json.dumps(declaration, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def lag_bucket(lag_s: float) -> int:
    """The index of the first bucket a lag fits (len(LAG_BUCKETS) for +Inf)."""
    for index, bound in enumerate(LAG_BUCKETS):
        if lag_s <= bound:
            return index
    return len(LAG_BUCKETS)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- storage ------------------------------------------------------------------------

# KEYS: schedule, index. ARGV: id, spec, enabled, origin, declared, watermark, now.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'enabled', ARGV[3], 'origin', ARGV[4],
  'declared', ARGV[5], 'watermark', ARGV[6], 'created_at', ARGV[7], 'updated_at', ARGV[7],
  'fired', 0, 'skipped', 0, 'missed', 0)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""

# KEYS: schedule. ARGV: spec, watermark ('' keeps it), now, origin ('' keeps), declared,
# expected origin ('' any), enabled ('' keeps; resuming moves the watermark to now), now ms.
_REPLACE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'origin') ~= ARGV[6] then return -1 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'updated_at', ARGV[3])
if ARGV[2] ~= '' then
  local mark = tonumber(redis.call('HGET', KEYS[1], 'watermark') or '0')
  if tonumber(ARGV[2]) > mark then redis.call('HSET', KEYS[1], 'watermark', ARGV[2]) end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'origin', ARGV[4], 'declared', ARGV[5]) end
if ARGV[7] ~= '' then
  local was = redis.call('HGET', KEYS[1], 'enabled')
  redis.call('HSET', KEYS[1], 'enabled', ARGV[7])
  if ARGV[7] == '1' then
    redis.call('HDEL', KEYS[1], 'disabled_reason')
    local mark = tonumber(redis.call('HGET', KEYS[1], 'watermark') or '0')
    if was ~= '1' and tonumber(ARGV[8]) > mark then
      redis.call('HSET', KEYS[1], 'watermark', ARGV[8])
    end
  end
end
return 1
"""

# KEYS: schedule. ARGV: enabled (1/0), watermark ('' keeps it), now, reason ('' none).
_SET_ENABLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local was = redis.call('HGET', KEYS[1], 'enabled')
redis.call('HSET', KEYS[1], 'enabled', ARGV[1], 'updated_at', ARGV[3])
if ARGV[1] == '1' then
  redis.call('HDEL', KEYS[1], 'disabled_reason')
  if was ~= '1' and ARGV[2] ~= '' then
    local mark = tonumber(redis.call('HGET', KEYS[1], 'watermark') or '0')
    if tonumber(ARGV[2]) > mark then redis.call('HSET', KEYS[1], 'watermark', ARGV[2]) end
  end
elseif ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'disabled_reason', ARGV[4])
end
return 1
"""

# KEYS: schedule, fires. ARGV: expected watermark ('' any), new watermark, missed count,
# outcome ('' none: only missed fires), job id, fire entry JSON, lag bucket, lag s, kept.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local mark = redis.call('HGET', KEYS[1], 'watermark') or '0'
if ARGV[1] ~= '' and mark ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then
  if tonumber(ARGV[2]) <= tonumber(mark) then return 0 end
  redis.call('HSET', KEYS[1], 'watermark', ARGV[2])
end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[1], 'missed', ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'last_job', ARGV[5]) end
  redis.call('LPUSH', KEYS[2], ARGV[6])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[9]) - 1)
  if ARGV[7] ~= '' then
    redis.call('HINCRBY', KEYS[1], 'lag:' .. ARGV[7], 1)
    redis.call('HINCRBYFLOAT', KEYS[1], 'lag_sum', ARGV[8])
  end
end
return 1
"""


class ScheduleStore:
    """Reads and writes schedules; the web, the CLI and every scheduler share it."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._create, self._replace, self._set_enabled, self._record = (
            client.register_script(s) for s in (_CREATE, _REPLACE, _SET_ENABLED, _RECORD)
        )

    @staticmethod
    def key(schedule_id: str) -> str:
        return SCHEDULE_PREFIX + schedule_id

    def create(
        self,
        schedule: Schedule,
        *,
        enabled: bool = True,
        origin: str = "api",
        declared: str = "",
        at_ms: int | None = None,
    ) -> bool:
        """Store a new schedule; False when the id is taken. It fires from now on."""
        at_ms = now_ms() if at_ms is None else at_ms
        return bool(
            self._create(
                keys=[self.key(schedule.id), SCHEDULE_INDEX],
                args=[
                    schedule.id,
                    json.dumps(schedule.as_fields()),
                    "1" if enabled else "0",
                    origin,
                    declared,
                    at_ms,
                    _stamp(at_ms),
                ],
            )
        )

    def count(self) -> int:
        return int(self.redis.zcard(SCHEDULE_INDEX))

    def replace(
        self,
        schedule: Schedule,
        *,
        restart: bool,
        enabled: bool | None = None,
        origin: str = "",
        declared: str = "",
        expect_origin: str = "",
    ) -> int:
        """Change a definition (1), or 0 when it is gone, -1 when its origin is not expected.

        ``restart`` moves the watermark to now: a new cadence fires from its next due
        time and does not backfill what the old one would have fired.
        """
        at = now_ms()
        return int(
            self._replace(
                keys=[self.key(schedule.id)],
                args=[
                    json.dumps(schedule.as_fields()),
                    at if restart else "",
                    _stamp(at),
                    origin,
                    declared,
                    expect_origin,
                    "" if enabled is None else ("1" if enabled else "0"),
                    at,
                ],
            )
        )

    def set_enabled(self, schedule_id: str, enabled: bool, reason: str = "") -> bool:
        """Pause or resume; resuming fires from the next due time (no backfill of the pause)."""
        at = now_ms()
        return bool(
            self._set_enabled(
                keys=[self.key(schedule_id)],
                args=["1" if enabled else "0", at, _stamp(at), reason],
            )
        )

    def delete(self, schedule_id: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.delete(self.key(schedule_id), FIRES_PREFIX + schedule_id)
        pipe.zrem(SCHEDULE_INDEX, schedule_id)
        removed, _ = pipe.execute()
        return bool(removed)

    def get(self, schedule_id: str) -> StoredSchedule | None:
        return _decode(self.redis.hgetall(self.key(schedule_id)))

    def ids(self, after: str = "", limit: int = MAX_SCHEDULES) -> list[str]:
        lower = "(" + after if after else "-"
        return [text(i) for i in self.redis.zrangebylex(SCHEDULE_INDEX, lower, "+", 0, limit)]

    def get_many(self, ids: list[str]) -> list[StoredSchedule]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hgetall(self.key(schedule_id))
        return [s for s in (_decode(raw) for raw in pipe.execute()) if s is not None]

    def all(self) -> list[StoredSchedule]:
        return self.get_many(self.ids())

    def fires(self, schedule_id: str, limit: int = KEPT_FIRES) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(FIRES_PREFIX + schedule_id, 0, limit - 1)]

    def record(
        self,
        schedule_id: str,
        *,
        expect_ms: int | None,
        due_ms: int | None,
        missed: int = 0,
        outcome: str = "",
        job_id: str = "",
        due_at: str = "",
        lag_s: float | None = None,
    ) -> bool:
        """Record what happened to the fires up to ``due_ms``; False when another scheduler did.

        A compare-and-set on the watermark: with ``expect_ms`` the watermark must be
        what this scheduler read when it worked the fires out. ``outcome`` is
        "fired", "skipped" or "manual" (run now: no watermark, ``due_ms`` None).
        """
        entry = json.dumps(
            {"due_at": due_at, "job_id": job_id or None, "outcome": outcome or "missed"}
        )
        counted = "fired" if outcome == "manual" else outcome
        return bool(
            self._record(
                keys=[self.key(schedule_id), FIRES_PREFIX + schedule_id],
                args=[
                    "" if expect_ms is None else str(expect_ms),
                    "" if due_ms is None else str(due_ms),
                    missed,
                    counted,
                    job_id,
                    entry,
                    "" if lag_s is None else lag_bucket(lag_s),
                    0 if lag_s is None else round(lag_s, 6),
                    KEPT_FIRES,
                ],
            )
        )


def _stamp(at_ms: int) -> str:
    return rfc3339(datetime.fromtimestamp(at_ms / 1000, UTC))


def _decode(raw: Mapping[Any, Any]) -> StoredSchedule | None:
    if not raw:
        return None
    fields = {text(k): text(v) for k, v in raw.items()}
    if "spec" not in fields:  # a half-deleted hash: treat as gone
        return None
    buckets = [int(fields.get(f"lag:{i}", 0)) for i in range(len(LAG_BUCKETS) + 1)]
    return StoredSchedule(
        schedule=from_fields(json.loads(fields["spec"])),
        enabled=fields.get("enabled") == "1",
        origin=fields.get("origin", "api"),
        declared=fields.get("declared", ""),
        watermark_ms=int(fields.get("watermark", 0)),
        created_at=fields.get("created_at", ""),
        updated_at=fields.get("updated_at", ""),
        last_job=fields.get("last_job"),
        disabled_reason=fields.get("disabled_reason"),
        counts={name: int(fields.get(name, 0)) for name in COUNTS},
        lag_buckets=buckets,
        lag_sum=float(fields.get("lag_sum", 0)),
    )
