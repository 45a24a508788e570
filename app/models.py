"""Request and response models of the HTTP API.

The same models validate requests and generate ``/openapi.json``, so the
document cannot drift from what the code accepts.
"""

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    JsonValue,
)

JobState = Literal["queued", "scheduled", "started", "retrying", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    done: int = Field(ge=0, description="units of work done so far")
    total: int | None = Field(default=None, description="units in all, when the job knows")
    message: str | None = Field(default=None, description="what the job is doing (200 characters)")
    updated_at: str = Field(description="when the running attempt last reported")


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
    tags: dict[str, str] | None = None
    parent_id: str | None = None
    callback_url: str | None = Field(
        default=None, description="POSTed the job's view when it reaches a final state"
    )
    progress: Progress | None = Field(
        default=None,
        description="how far the latest attempt got, as its handler reports it "
        "(context.progress; at most four writes per second per job)",
    )


class BatchedJob(Job):
    location: str = Field(description="where to read the job: GET /jobs/{id}")


class BatchAccepted(BaseModel):
    jobs: list[BatchedJob] = Field(description="in the order of the request's items")


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


class JobPage(BaseModel):
    jobs: list[Job] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: no more")


class JobStats(BaseModel):
    states: dict[str, int] = Field(description="jobs per state")
    types: dict[str, dict[str, int]] = Field(description="per job type, jobs per state")
    total: int


class BulkResult(BaseModel):
    action: Literal["cancel", "replay", "purge"]
    dry_run: bool
    matched: int = Field(description="jobs selected in a state the action applies to")
    more: bool = Field(description="more jobs match the filter than one request acts on")
    acted: int = Field(description="jobs the action was applied to (0 on a dry run)")
    ids: list[str] = Field(description="the jobs acted on")
    skipped: dict[str, int] = Field(
        description="jobs not acted on, by reason: not_eligible (ids in another state), the "
        "state a job moved to meanwhile, not_dead_lettered_yet, dead_letter_gone"
    )
    not_found: list[str] = Field(description="ids with no job")
