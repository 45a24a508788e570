"""Flask settings per environment (uppercase, Flask's convention).

Celery settings live in ``celeryconfig.py`` and ``config/``; these are only
what the HTTP layer needs. Secrets come from the environment.
"""

import os
from typing import Any

MiB = 1024 * 1024


def flask_settings(environment: str) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "TASKPLANE_ENV": environment,
        # Werkzeug answers 413 past this, before the body is read into memory.
        "MAX_CONTENT_LENGTH": int(os.environ.get("TASKPLANE_MAX_BODY_BYTES", MiB)),
        "SECRET_KEY": os.environ.get("TASKPLANE_SECRET_KEY"),
        "JSON_SORT_KEYS": False,
    }
    if environment != "production" and not settings["SECRET_KEY"]:
        settings["SECRET_KEY"] = f"insecure-{environment}-only"
    return settings
