"""Payload of email.send."""

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.schema_types import EmailAddress, SingleLine


class EmailPayload(BaseModel):
    """One message to one or more recipients; plain text with an optional HTML part."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: list[EmailAddress] = Field(min_length=1, max_length=50)
    subject: SingleLine = Field(min_length=1, max_length=998)
    text: str = Field(max_length=256 * 1024)
    html: str | None = Field(default=None, max_length=512 * 1024)
    from_: EmailAddress | None = Field(
        default=None, alias="from", description="defaults to the platform's sender"
    )
