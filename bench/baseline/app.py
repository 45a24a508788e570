"""The baseline: the smallest Flask + Celery job API a user would write.

Celery is given a broker and a result backend and nothing else, so every other
setting is Celery's default: no publisher confirms, early acks, prefetch
multiplier 4, the classic queue "celery", results stored in Redis. Served the
same way as Taskplane (gunicorn, see ``gunicorn_conf.py`` beside this file)
and run by a default worker: ``celery -A bench.baseline.app worker -c 2``.

Two jobs: ``noop`` (POST /jobs; nothing, so only the platform's own cost is
measured) and ``webhook`` (POST /webhooks with ``{"url", "body"}``; one POST
with httpx, the library Taskplane's webhook.deliver uses).

The broker and backend come from Celery's own variables, CELERY_BROKER_URL and
CELERY_RESULT_BACKEND (the benchmark points them at a vhost and a Redis
database of the baseline's own).
"""

import os

import httpx
from celery import Celery
from flask import Flask, request


def build(name: str, **settings: object) -> tuple[Celery, Flask]:
    """The two jobs and their endpoints on a Celery app named ``name`` with
    ``settings`` over Celery's defaults (the guarded baseline reuses it)."""
    celery = Celery(
        name,
        broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
    )
    celery.conf.update(settings)
    web = Flask(name)

    @celery.task(name=f"{name}.noop", shared=False)
    def noop() -> None:
        """The job: nothing, so only the platform's own cost is measured."""

    @celery.task(name=f"{name}.webhook", shared=False)
    def webhook(url: str, body: object) -> int:
        """The realistic job: POST ``body`` as JSON to ``url``; a non-2xx answer fails it."""
        response = _client().post(url, json=body, timeout=10)
        response.raise_for_status()
        return response.status_code

    @web.post("/jobs")
    def submit() -> tuple[dict, int]:
        result = noop.delay()
        return {"id": result.id}, 202

    @web.post("/webhooks")
    def submit_webhook() -> tuple[dict, int]:
        payload = request.get_json()
        result = webhook.delay(payload["url"], payload["body"])
        return {"id": result.id}, 202

    return celery, web


_clients: dict[int, httpx.Client] = {}


def _client() -> httpx.Client:
    """One pooled client per process, as a team that measured would write it
    (``httpx.post()`` builds a TLS context per call: ~30 jobs/s)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = httpx.Client()
    return _clients[pid]


# Named "web", not "app": `celery -A bench.baseline.app` takes a module's "app"
# attribute as the Celery app, so the Flask app must not be called that.
celery, web = build("baseline")
