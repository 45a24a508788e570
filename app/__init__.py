"""Taskplane's HTTP front door.

``create_app`` builds a fresh app (tests make one per test); ``wsgi.py`` is
the only place that builds one at import.
"""

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from app import errors, waits
from app.context import CELERY_EXTENSION
from app.settings import flask_settings
from config import current_environment
from config.checks import refuse_if_any, web_problems
from tasks.factory import TaskplaneCelery, create_celery_app


def create_app(
    config: Mapping[str, Any] | None = None,
    celery: TaskplaneCelery | None = None,
    configure_logs: bool = False,
) -> Flask:
    """Build the web app; ``configure_logs`` is for the process entry point (wsgi.py)."""
    app = Flask(__name__, static_folder=None)  # no static route: every route is the API's
    environment = (config or {}).get("TASKPLANE_ENV") or current_environment()
    app.config.update(flask_settings(environment))
    if config:
        app.config.update(config)
    app.json.sort_keys = False
    app.extensions[CELERY_EXTENSION] = celery or create_celery_app(
        environment,
        overrides=app.config.get("CELERY_OVERRIDES"),
        patient_storage=False,
        watches_broker=True,
    )
    errors.init_app(app)
    celery_app = app.extensions[CELERY_EXTENSION]
    waits.init_app(app, celery_app.jobstore.redis, int(celery_app.conf.taskplane_wait_slots))
    from app import (  # these import the app package
        auth,
        batch,
        cli,
        deadletters,
        docs,
        health,
        job_search,
        jobs,
        metrics,
        observability,
        openapi,
        queues,
        ratelimit,
        schedules,
        workflows,
    )

    observability.init_app(app, configure_logs=configure_logs)
    metrics.init_app(app)
    auth.init_app(app)
    health.init_app(app)
    cli.init_app(app)
    blueprints = (
        jobs.bp,  # first: it registers the jobid converter the others use
        job_search.bp,
        batch.bp,
        workflows.bp,
        deadletters.bp,
        queues.bp,
        schedules.bp,
        openapi.bp,
        docs.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    ratelimit.init_app(app)
    openapi.check_routes(app)  # a route without its entry in /openapi.json stops here
    if environment == "production":
        refuse_if_any(web_problems(app.config, os.environ, len(app.extensions["api_tokens"])))
    return app
