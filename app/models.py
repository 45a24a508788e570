"""Request and response models of the HTTP API.

The same models validate requests and generate ``/openapi.json``, so the
document cannot drift from what the code accepts.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

JobState = Literal["queued", "scheduled", "started", "retrying", "succeeded", "failed", "cancelled"]


class JobSubmission(BaseModel):
    """The envelope of POST /jobs; ``payload`` is checked against the job type's schema."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, description="a job type name, see /job-types")
    payload: dict[str, JsonValue] = Field(default_factory=dict)


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
