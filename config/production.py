"""Production: no diagnostics job types, no insecure defaults."""

from celeryconfig import *  # noqa: F403

taskplane_environment = "production"
# Diagnostics jobs can crash workers on request: never in production.
taskplane_job_families = ["webhooks", "email", "logs"]
# One JSON object per log line, for shippers.
taskplane_log_json = True
