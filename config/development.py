"""Development: the defaults, with every job family including diagnostics."""

import os

from celeryconfig import *  # noqa: F403

taskplane_environment = "development"

# One declared schedule, so `make run` shows a scheduler at work (GET /schedules).
if not os.environ.get("TASKPLANE_SCHEDULES_FILE"):
    taskplane_schedules = [
        {
            "id": "example-heartbeat",
            "type": "diagnostics.echo",
            "payload": {"data": "declared in config/development.py"},
            "interval_s": 60,
        }
    ]
