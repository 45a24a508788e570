"""Request and response models of the HTTP API.

The same models validate requests and generate ``/openapi.json``, so the
document cannot drift from what the code accepts.
"""

import json
from typing import Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

# Native delayed delivery reaches about 8.5 years; a month is a sane bound.
MAX_DELAY_S = 30 * 24 * 3600

JobState = Literal["queued", "scheduled", "started", "retrying", "succeeded", "failed", "cancelled"]


class JobSubmission(BaseModel):
    """The envelope of POST /jobs; ``payload`` is checked against the job type's schema."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, description="a job type name, see /job-types")
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    delay_s: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, description="run no sooner than this many seconds"
    )
    run_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 time with offset; run no sooner"
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.delay_s is not None and self.run_at is not None:
            raise ValueError("give at most one of 'delay_s' or 'run_at'")
        return self


class Job(BaseModel):
    id: str
    type: str
    state: JobState
    queue: str | None = None
    attempts: int = 0
    result: JsonValue = None
    error: dict[str, JsonValue] | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    next_attempt_at: str | None = None
    scheduled_for: str | None = None
    worker: str | None = None
    dead_reason: str | None = None
    dead_lettered_at: str | None = None
    history: list[dict[str, JsonValue]] = Field(
        default_factory=list, description="earlier runs, kept when a job is replayed"
    )


class RetryInfo(BaseModel):
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    jitter: bool


class JobTypeInfo(BaseModel):
    name: str
    description: str
    queue: str
    payload_schema: dict[str, Any]
    retry: RetryInfo
    time_limit_s: float
    needs_result: bool


class JobTypeList(BaseModel):
    job_types: list[JobTypeInfo]


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable")
    message: str
    details: JsonValue = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthStatus(BaseModel):
    status: Literal["UP", "DOWN"]


def validate_json_payload(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate data that came as JSON with JSON's own types: no "1" for 1, no false for 0."""
    return model.model_validate_json(json.dumps(integral_floats_as_ints(data)), strict=True)


def integral_floats_as_ints(value: Any) -> Any:
    """72.0 is the integer 72 in JSON Schema's eyes; strict validation must agree."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats_as_ints(v) for v in value]
    return value


def validation_details(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Field paths and messages, without echoing the (possibly large) input back."""
    details = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        path = ".".join(str(part) for part in error["loc"])
        details.append(
            {
                "path": f"{prefix}.{path}" if prefix and path else (prefix or path),
                "message": error["msg"],
                "type": error["type"],
            }
        )
    return details
