"""The baseline: the smallest Flask + Celery job API a user would write.

Celery is given a broker and a result backend and nothing else, so every other
setting is Celery's default: no publisher confirms, early acks, prefetch
multiplier 4, the classic queue "celery", results stored in Redis. Served the
same way as Taskplane (gunicorn, see ``gunicorn_conf.py`` beside this file)
and run by a default worker: ``celery -A bench.baseline.app worker -c 2``.

The broker and backend come from Celery's own variables, CELERY_BROKER_URL and
CELERY_RESULT_BACKEND (the benchmark points them at a vhost and a Redis
database of the baseline's own).
"""

import os

from celery import Celery
from flask import Flask

celery = Celery(
    "baseline",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
# Named "web", not "app": `celery -A bench.baseline.app` takes a module's "app"
# attribute as the Celery app, so the Flask app must not be called that.
web = Flask(__name__)


@celery.task
def noop() -> None:
    """The job: nothing, so only the platform's own cost is measured."""


@web.post("/jobs")
def submit() -> tuple[dict, int]:
    result = noop.delay()
    return {"id": result.id}, 202
