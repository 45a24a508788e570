"""Production: no diagnostics job types, no insecure defaults."""

import os

from celeryconfig import *  # noqa: F403

taskplane_environment = "production"
# Diagnostics jobs can crash workers on request: never in production.
taskplane_job_families = ["webhooks", "email", "logs"]
# One JSON object per log line, for shippers.
taskplane_log_json = True
# Deny private, loopback and link-local targets; allow chosen networks with
# TASKPLANE_URL_ALLOW="10.1.0.0/16,192.168.5.7".
taskplane_url_policy = {
    "deny_private": True,
    "allow": [n for n in os.environ.get("TASKPLANE_URL_ALLOW", "").split(",") if n.strip()],
    "deny": [],
}
# Production always limits: generous defaults, tighten per deployment.
taskplane_rate_limits = {
    "per_token": os.environ.get("TASKPLANE_RATE_LIMIT_PER_TOKEN", "2000/second"),
    "per_job_type": {
        "default": os.environ.get("TASKPLANE_RATE_LIMIT_PER_JOB_TYPE", "1000/second"),
    },
}
