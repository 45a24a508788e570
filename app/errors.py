"""One JSON error shape for every error the API returns.

``{"error": {"code": "...", "message": "...", "details": ...}}``, whatever
raised it: our own checks, Werkzeug's HTTP errors (404, 405, 413, ...) or a
bug. Clients can rely on ``code`` staying stable.
"""

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("taskplane.web")


class ApiError(Exception):
    """An error with its HTTP status, stable code and optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("-", "_")


def hit_deadline(exc: BaseException) -> bool:
    """Whether ``exc`` came from a wait that ran out of time (broker or Redis)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TimeoutError | RedisTimeoutError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _handle_api_error(exc: ApiError) -> Response:
    if exc.status == 503 and hit_deadline(exc):
        g.taskplane_deadline_exceeded = True  # counted by app/metrics.py
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    # Keep headers such as Allow (405) but not Werkzeug's HTML content type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error_response(status, _http_code(exc), exc.description or exc.name, headers=headers)


def _handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "the server failed to handle the request")


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
