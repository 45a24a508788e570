"""Per-environment configuration, chosen by one variable: TASKPLANE_ENV.

Each environment is a module here that starts from ``celeryconfig`` and
overrides what differs. The Celery app loads the chosen module; the Flask app
reads the same Celery configuration, so web and worker never disagree.
"""

import os

ENV_VAR = "TASKPLANE_ENV"
ENVIRONMENTS = ("development", "testing", "production")


def current_environment() -> str:
    """The environment named by TASKPLANE_ENV (development when unset)."""
    name = os.environ.get(ENV_VAR, "development").strip().lower() or "development"
    if name not in ENVIRONMENTS:
        raise SystemExit(f"{ENV_VAR}={name!r} is not one of {', '.join(ENVIRONMENTS)}")
    return name


def config_module(environment: str | None = None) -> str:
    """Dotted path of the settings module Celery should load."""
    return f"config.{environment or current_environment()}"
