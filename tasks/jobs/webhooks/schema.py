"""Payload of webhook.deliver."""

import json
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from tasks.core.schema_types import HeaderName, HeaderValue, HttpUrl


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class WebhookPayload(BaseModel):
    """Where to POST, what JSON to send, and how long to wait for an answer."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="http(s) URL that receives the POST")
    body: JsonValue = Field(description="any JSON value, sent as the request body")
    body_json: str | None = Field(
        default=None,
        description="optional: the request body byte for byte (UTF-8 JSON text that decodes "
        "to 'body'), for a receiver that checks a signature over the exact bytes",
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=50,
        description="extra request headers",
        # Names that do not match the header-name pattern are refused, not ignored.
        json_schema_extra={"additionalProperties": False},
    )
    timeout_s: float = Field(default=10.0, gt=0, le=60, description="per-attempt timeout")

    @model_validator(mode="after")
    def _body_json_is_body(self) -> Self:
        """``body_json`` only fixes the bytes: what it says must be ``body``."""
        if self.body_json is None:
            return self
        try:
            self.body_json.encode("utf-8")  # a lone surrogate cannot be sent
            decoded = json.loads(self.body_json, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ValueError(f"body_json is not JSON text: {exc}") from exc
        if decoded != self.body:
            raise ValueError("body_json does not decode to body")
        return self
