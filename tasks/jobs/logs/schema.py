"""Payload of logs.summarize."""

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.schema_types import HttpUrl

MAX_LINES = 10_000
MAX_LINE_CHARS = 16 * 1024


def _no_default(schema: dict) -> None:
    """The absent field has no default value a client could send."""
    schema.pop("default", None)


class LogsPayload(BaseModel):
    """A log to read: either a URL to stream or the lines themselves (exactly one)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["url"]}, {"required": ["lines"]}]},
    )

    # Exactly one of the two, present and not null (the JSON Schema says the same).
    url: HttpUrl = Field(
        default=None, description="plain text or JSON-lines log", json_schema_extra=_no_default
    )
    lines: list[Annotated[str, Field(max_length=MAX_LINE_CHARS)]] = Field(
        default=None, max_length=MAX_LINES, json_schema_extra=_no_default
    )
    top_errors: int = Field(default=10, ge=1, le=100)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.url is None) == (self.lines is None):
            raise ValueError("give exactly one of 'url' or 'lines'")
        return self
