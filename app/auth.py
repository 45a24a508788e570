"""Bearer-token authentication with scopes.

Tokens are configured as SHA-256 hashes (``TASKPLANE_API_TOKENS``, a JSON list
of ``{"name", "sha256", "scopes"}``), never in plain text; ``flask --app wsgi
token create`` makes one. Tokens are 32 random bytes, so a plain hash is
enough: there is nothing to brute-force. Comparison is constant-time and the
token itself is never logged. Required in production; in development and
testing an empty list means every request may do everything.
"""

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

from flask import Flask, current_app, g, request

from app.errors import ApiError

SCOPES = ("jobs:submit", "jobs:read", "admin")
TOKENS_ENV = "TASKPLANE_API_TOKENS"
# Endpoint -> scope it needs; endpoints not listed are public (health, metrics,
# job types, and the API document and its reference page: a client reads them
# before it has a token).
REQUIRED_SCOPE = {
    "jobs.create_job": "jobs:submit",
    "batch.create_batch": "jobs:submit",
    "jobs.cancel_job": "jobs:submit",
    "jobs.cancel_job_by_delete": "jobs:submit",
    "jobs.get_job": "jobs:read",
    "job_search.list_jobs": "jobs:read",
    "job_search.job_stats": "jobs:read",
    "job_search.cancel_jobs": "admin",
    "job_search.replay_jobs": "admin",
    "job_search.purge_jobs": "admin",
    "job_search.replay_job": "admin",
    "workflows.start_workflow": "jobs:submit",
    "workflows.get_workflow": "jobs:read",
    "workflows.cancel_workflow": "jobs:submit",
    "workflows.retry_workflow": "jobs:submit",
    "deadletters.list_dead_letters": "admin",
    "deadletters.replay_dead_letters": "admin",
    "deadletters.purge_dead_letters": "admin",
    "queues.list_queues": "admin",
    "queues.pause_queue": "admin",
    "queues.resume_queue": "admin",
    "schedules.list_schedules": "admin",
    "schedules.create_schedule": "admin",
    "schedules.get_schedule": "admin",
    "schedules.change_schedule": "admin",
    "schedules.delete_schedule": "admin",
    "schedules.pause_schedule": "admin",
    "schedules.resume_schedule": "admin",
    "schedules.run_schedule": "admin",
}


@dataclass(frozen=True)
class ApiToken:
    name: str
    sha256: str
    scopes: frozenset[str]


ANONYMOUS = ApiToken("anonymous", "", frozenset(SCOPES))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tp_" + secrets.token_urlsafe(32)


def load_tokens(raw: str | None) -> list[ApiToken]:
    """Parse TASKPLANE_API_TOKENS; a malformed entry stops the process with a clear message."""
    if not raw or not raw.strip():
        return []
    try:
        entries = json.loads(raw)
        tokens = [
            ApiToken(str(e["name"]), str(e["sha256"]).lower(), frozenset(e["scopes"]))
            for e in entries
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise SystemExit(
            f'{TOKENS_ENV} must be a JSON list of {{"name", "sha256", "scopes"}}: {exc}'
        ) from exc
    for token in tokens:
        if len(token.sha256) != 64 or not set(token.sha256) <= set("0123456789abcdef"):
            raise SystemExit(f"{TOKENS_ENV}: token {token.name!r} needs a SHA-256 hex digest")
        if not token.scopes or not token.scopes <= set(SCOPES):
            raise SystemExit(
                f"{TOKENS_ENV}: token {token.name!r} has unknown scopes; "
                f"choose from {', '.join(SCOPES)}"
            )
    return tokens


def find_token(tokens: list[ApiToken], presented: str) -> ApiToken | None:
    """The token whose hash matches, comparing against every one in constant time."""
    digest = hash_token(presented)
    found = None
    for token in tokens:
        if hmac.compare_digest(token.sha256, digest):
            found = token
    return found


def enforced(app: Flask) -> bool:
    """Whether this process checks tokens: some are configured, or they are required.

    The API document declares security (and 401/403) only when this holds.
    """
    return bool(app.extensions["api_tokens"]) or bool(app.config["AUTH_REQUIRED"])


def _authenticate() -> None:
    scope = REQUIRED_SCOPE.get(request.endpoint or "")
    tokens: list[ApiToken] = current_app.extensions["api_tokens"]
    if not enforced(current_app):
        g.token = ANONYMOUS
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    token = find_token(tokens, presented.strip()) if scheme.lower() == "bearer" else None
    g.token = token
    if scope is None:
        return
    if token is None:
        raise ApiError(
            401,
            "unauthorized",
            "send a valid token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="taskplane"'},
        )
    if scope not in token.scopes:
        raise ApiError(
            403,
            "forbidden",
            f"this token lacks the {scope!r} scope",
            details={"required_scope": scope},
        )


def token_name() -> str:
    """Who is asking (for rate limits and idempotency keys)."""
    token = g.get("token")
    return token.name if token is not None else "anonymous"


def init_app(app: Flask) -> None:
    app.extensions["api_tokens"] = load_tokens(os.environ.get(TOKENS_ENV))
    app.config.setdefault("AUTH_REQUIRED", app.config["TASKPLANE_ENV"] == "production")
    app.before_request(_authenticate)
