"""Rate limits per token and per job type, shared by every gunicorn worker and host.

Flask-Limiter with its counters in the platform's Redis, so the limit holds
across processes and machines. Over the limit: 429 with Retry-After, in the
one error shape. If Redis cannot be reached the limiter lets requests
through (the submit itself then answers 503).

Flask-Limiter is imported only when limits are configured: with its storage
library it is ~60 modules and ~2 MB in every web process that has no limits.
"""

from typing import TYPE_CHECKING

from flask import Flask, request

from app.auth import token_name
from app.context import celery_app, celery_of

if TYPE_CHECKING:
    from flask_limiter import Limiter

# Never counted: probes, scrapes, and the API document with its reference page.
EXEMPT = (
    "health.live",
    "health.ready",
    "metrics.metrics_endpoint",
    "openapi.openapi",
    "docs.docs",
    "docs.asset",
)
LIMITER = "rate_limiter"


def _job_type() -> str:
    body = request.get_json(silent=True, cache=True)
    job_type = body.get("type") if isinstance(body, dict) else None
    return job_type if isinstance(job_type, str) and len(job_type) <= 200 else "-"


def _per_type_limit() -> str:
    limits = celery_app().conf.taskplane_rate_limits
    per_type = limits.get("per_job_type") or {}
    return per_type.get(_job_type()) or per_type.get("default") or "1000000/second"


def init_app(app: Flask) -> "Limiter | None":
    conf = celery_of(app).conf
    limits = conf.taskplane_rate_limits or {}
    if not limits.get("per_token") and not (limits.get("per_job_type") or {}).get("default"):
        return None  # not configured: no limiter on the request path at all
    from flask_limiter import Limiter

    limiter = Limiter(
        key_func=token_name,
        app=app,
        storage_uri=conf.result_backend,
        storage_options={"socket_timeout": 1, "socket_connect_timeout": 1},
        key_prefix="taskplane:ratelimit",
        # One budget per token across every route (default_limits would count
        # each route separately).
        application_limits=[limits["per_token"]] if limits.get("per_token") else [],
        headers_enabled=True,
        swallow_errors=True,
        strategy="fixed-window",  # one INCR per limit: cheap on the submit path
    )
    app.extensions[LIMITER] = limiter
    for endpoint in EXEMPT:
        limiter.exempt(app.view_functions[endpoint])
    per_type = limiter.limit(
        _per_type_limit, key_func=lambda: f"{token_name()}:{_job_type()}", override_defaults=False
    )
    app.view_functions["jobs.create_job"] = per_type(app.view_functions["jobs.create_job"])
    return limiter


def limited_endpoints(app: Flask) -> frozenset[str]:
    """Endpoints that may answer 429 in this process (none when no limit is configured)."""
    if LIMITER not in app.extensions:
        return frozenset()
    return frozenset(app.view_functions) - set(EXEMPT)
