"""Payloads of the diagnostics job types."""

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class EchoPayload(BaseModel):
    """Anything; echoed back as the result."""

    model_config = ConfigDict(extra="forbid")

    data: JsonValue = None


class SumPayload(BaseModel):
    """Numbers to add up (a workflow's fan-in, for tests and benchmarks)."""

    model_config = ConfigDict(extra="forbid")

    values: list[float] = Field(max_length=100_000)


class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=600)
    effect: bool = Field(default=False, description="count one side effect after sleeping")
    effect_s: float = Field(
        default=0, ge=0, le=60, description="how long the side effect itself takes, under its claim"
    )
    steps: int = Field(
        default=0, ge=0, le=10_000, description="report progress this many times while sleeping"
    )


class FailPayload(BaseModel):
    """Fail the first ``times`` attempts (every attempt when null), then succeed."""

    model_config = ConfigDict(extra="forbid")

    times: int | None = Field(default=None, ge=0, le=100)
    permanent: bool = Field(default=False, description="fail without retrying")
    message: str = Field(default="diagnostics.fail", max_length=1000)


class CrashPayload(BaseModel):
    """Kill the worker process running the first ``times`` attempts (every one when null)."""

    model_config = ConfigDict(extra="forbid")

    times: int | None = Field(default=None, ge=0, le=100)
