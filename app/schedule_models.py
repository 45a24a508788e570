"""Schedules in the API document: what GET answers, and what POST and PATCH take.

The answers are pydantic models of ``describe`` (tasks/core/schedule_fire.py);
the views pass every answer through them, so the document cannot promise a field
the server does not send. The bodies are ``ScheduleIn`` and ``SchedulePatch``
(tasks/core/schedules.py) as JSON Schema, with what the checks behind them
enforce and a schema can state: one variant per job type of this environment
with that type's payload schema (as POST /jobs), the time zones this host knows,
the bounds of ``interval_s`` and ``jitter_s``, and exactly one of ``cron`` and
``interval_s``. What no schema can state is said in the descriptions: a cron
expression that matches no date, ``end_at`` not after ``start_at``, and (PATCH) a
payload that does not fit the schedule's job type answer 422 naming the field.
"""

from copy import deepcopy
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, Field, JsonValue

from app.schemas import accepts_empty
from tasks.core.schedule_times import MAX_INTERVAL_S, MAX_JITTER_S, Cadence, ScheduleFieldError
from tasks.core.schedules import ID_PATTERN, ScheduleIn, SchedulePatch

if TYPE_CHECKING:
    from app.openapi import Context

REF = "#/components/schemas/{model}"


class ScheduleFire(BaseModel):
    due_at: str | None = Field(description="the due time (run now: when it was asked)")
    job_id: str | None = Field(description="the fire's job (none when skipped)")
    state: str = Field(description="the job's state; expired once it is forgotten; or skipped")
    trigger: Literal["schedule", "manual"]


class ScheduleCounts(BaseModel):
    fired: int
    skipped: int
    missed: int


class Schedule(BaseModel):
    id: str
    type: str
    payload: dict[str, JsonValue]
    tags: dict[str, str] | None = Field(default=None, description="given to every job it fires")
    cron: str | None = Field(default=None, description="cron schedules only")
    timezone: str | None = Field(default=None, description="cron schedules only")
    interval_s: float | None = Field(default=None, description="interval schedules only")
    missed: Literal["all", "last", "none"]
    overlap: Literal["allow", "skip"]
    jitter_s: float
    start_at: str | None
    end_at: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="why it is disabled: paused, or its payload stopped fitting its job type"
    )
    origin: Literal["api", "config"] = Field(
        description="config: declared in configuration; change or remove it there"
    )
    created_at: str
    updated_at: str
    next_fire_at: str | None = Field(description="none while disabled or past its end_at")
    last_fires: list[ScheduleFire] = Field(description="newest first")
    counts: ScheduleCounts


class ScheduleList(BaseModel):
    schedules: list[Schedule] = Field(description="in id order")
    next_after: str | None = Field(description="pass as 'after' for the next page; none: last")


def schedule_view(described: dict[str, Any]) -> dict[str, Any]:
    """``describe``'s dict as the documented model (only the fields it gave)."""
    return Schedule.model_validate(described).model_dump(mode="json", exclude_unset=True)


# -- request bodies ---------------------------------------------------------------

CRON_OR_INTERVAL = [
    {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
    {"required": ["interval_s"], "properties": {"interval_s": {"type": "number"}}},
]
WINDOW_NOTE = "; end_at must be later than start_at (422 naming end_at)"
CRON_NOTE = (
    "5 fields (minute hour day-of-month month day-of-week), read in timezone; "
    "an expression that cronsim refuses or that matches no date answers 422 naming cron"
)


@lru_cache(maxsize=1)
def known_zones() -> list[str]:
    """The time zones a schedule may name on this host (what the cadence check accepts)."""
    zones = []
    for name in sorted(available_timezones()):
        try:
            Cadence.from_fields(interval_s=1, timezone=name)
        except ScheduleFieldError:
            continue
        zones.append(name)
    return zones


def _model_schema(context: "Context", model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    for name, nested in schema.pop("$defs", {}).items():
        context.component(name, nested)
    return schema


def _interval(description: str) -> dict[str, Any]:
    return {
        "type": "number",
        "minimum": 1,
        "maximum": MAX_INTERVAL_S,
        "multipleOf": 0.001,
        "description": description + " (whole milliseconds)",
    }


def _common(fields: dict[str, Any], nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """Bounds of the fields both bodies share, from the checks that enforce them."""
    fields = deepcopy(fields)
    cron = {"type": "string", "maxLength": 256, "description": CRON_NOTE}
    zone = {"type": "string", "enum": known_zones(), "description": "an IANA time zone name"}
    jitter = {"type": "number", "minimum": 0, "maximum": MAX_JITTER_S}
    jitter["description"] = "run each fire up to this many seconds later"
    for name, schema in (
        ("cron", cron),
        ("interval_s", _interval("fire every this many seconds; or give cron")),
        ("timezone", zone),
        ("jitter_s", jitter),
    ):
        default = fields[name].get("default")
        fields[name] = {"anyOf": [schema, {"type": "null"}]} if name in nullable else schema
        if default is not None:
            fields[name]["default"] = default
    fields["end_at"]["description"] = fields["end_at"].get("description", "") + WINDOW_NOTE
    return fields


def schedule_in(context: "Context") -> dict[str, Any]:
    """POST /schedules: one variant per job type, told apart by ``type``."""
    base = _model_schema(context, ScheduleIn)
    # cron or interval_s may be null, but exactly one of them must have a value.
    fields = _common(base["properties"], nullable=("cron", "interval_s"))
    mapping = {}
    for job_type in context.job_types.values():
        properties = deepcopy(fields)
        properties["type"] = {"const": job_type.name, "description": "a job type, see /job-types"}
        properties["payload"] = context.resolve(job_type.payload_model, mode="validation")
        required = ["id", "type", *([] if accepts_empty(job_type) else ["payload"])]
        name = f"Schedule_{job_type.name.replace('.', '_')}"
        schema = {
            "type": "object",
            "title": f"Schedule {job_type.name}",
            "description": job_type.description,
            "additionalProperties": False,
            "required": required,
            "properties": properties,
            "oneOf": deepcopy(CRON_OR_INTERVAL),
        }
        mapping[job_type.name] = context.component(name, schema)["$ref"]
    return {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }


def schedule_patch(context: "Context") -> dict[str, Any]:
    """PATCH /schedules/{id}: the fields to change; only enabled, start_at, end_at take null."""
    base = _model_schema(context, SchedulePatch)
    fields = _common(base["properties"])
    for name, schema in list(fields.items()):
        if name in ("start_at", "end_at", "enabled"):
            continue
        options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
        keep = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        fields[name] = {**options[0], **keep} if len(options) == 1 else {"anyOf": options, **keep}
    fields["type"] = {
        "type": "string",
        "enum": list(context.job_types),
        "description": "a job type, see /job-types; the payload must fit it",
    }
    fields["payload"]["description"] = (
        "the new payload; it must fit the job type (the one given, else the schedule's), "
        "or the change answers 422 naming the payload's fields"
    )
    fields["interval_s"]["description"] = "switch to (or change) an interval; drops cron"
    fields["cron"] = {**fields["cron"], "description": CRON_NOTE + "; drops interval_s"}
    return {
        "type": "object",
        "title": "SchedulePatch",
        "description": base.get("description", ""),
        "additionalProperties": False,
        "properties": fields,
        "not": {"required": ["cron", "interval_s"]},
    }


SCHEDULE_ID: dict[str, Any] = {"type": "string", "pattern": ID_PATTERN}
