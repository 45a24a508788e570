"""Strict JSON request bodies: the right content type, valid UTF-8 JSON, an object."""

import json
from typing import Any

from flask import Request

from app.errors import ApiError

JSON_MIMETYPES = ("application/json",)
# Deeper documents are refused before any schema sees them (payloads are flat).
MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a dict, or an ApiError with the status a client can act on."""
    mimetype = request.mimetype or ""
    if mimetype not in JSON_MIMETYPES and not mimetype.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from exc
    if nesting_depth(body) > MAX_DEPTH:
        raise ApiError(
            400,
            "too_deeply_nested",
            f"the body nests arrays and objects deeper than {MAX_DEPTH} levels",
        )
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "validation_failed",
            "the body must be a JSON object",
            details=[{"path": "", "message": "expected an object", "type": "type"}],
        )
    return body


def nesting_depth(value: Any) -> int:
    """How deep arrays and objects nest, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest
