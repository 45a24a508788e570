"""Log configuration for workers: job context on every line.

Connected to Celery's ``setup_logging`` signal, so Celery leaves the root
logger alone and every line a job writes says which job wrote it.
"""

import logging
import sys
from typing import Any

from celery._state import get_current_task

FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s job=%(job_id)s: %(message)s"


class JobContextFilter(logging.Filter):
    """Adds job_id and job_type of the task running in this process, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = get_current_task()
        request = getattr(task, "request", None)
        record.job_id = getattr(request, "id", None) or "-"
        record.job_type = getattr(task, "name", None) or "-"
        return True


def configure_logging(loglevel: Any = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(loglevel or logging.INFO)
