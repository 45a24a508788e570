"""Payload of webhook.deliver."""

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from tasks.core.schema_types import HeaderName, HeaderValue, HttpUrl


class WebhookPayload(BaseModel):
    """Where to POST, what JSON to send, and how long to wait for an answer."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="http(s) URL that receives the POST")
    body: JsonValue = Field(
        description="any JSON value, sent as the request body: compact JSON, non-ASCII "
        "characters escaped, keys in the order given"
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=50,
        description="extra request headers",
        # Names that do not match the header-name pattern are refused, not ignored.
        json_schema_extra={"additionalProperties": False},
    )
    timeout_s: float = Field(default=10.0, gt=0, le=60, description="per-attempt timeout")
