"""Validating data that arrived as JSON, and describing what was wrong with it."""

import json
from typing import Any

from pydantic import BaseModel, ValidationError


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
