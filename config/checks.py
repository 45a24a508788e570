"""Production refuses to start with an insecure setting, and says which one.

Checked by every process that loads the production configuration (web,
worker, Flower, the CLI); the web adds its own (secret key, API tokens,
debug). Each problem names the setting, so the fix is obvious.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
UNSAFE_SERIALIZER = "pickle"
CONTENT_SETTINGS = ("accept_content", "result_accept_content")
SERIALIZER_SETTINGS = ("task_serializer", "result_serializer", "event_serializer")


def platform_problems(conf: Any) -> list[str]:
    problems = []
    broker = urlsplit(conf.broker_url)
    if (broker.username or "guest") == "guest" and broker.hostname not in LOOPBACK_HOSTS:
        problems.append(
            "CELERY_BROKER_URL uses RabbitMQ's default guest account on a "
            f"non-loopback host ({broker.hostname})"
        )
    for name in CONTENT_SETTINGS:
        if any(UNSAFE_SERIALIZER in str(c) for c in (conf.get(name) or [])):
            problems.append(f"{name} accepts {UNSAFE_SERIALIZER}")
    for name in SERIALIZER_SETTINGS:
        if str(conf.get(name)) == UNSAFE_SERIALIZER:
            problems.append(f"{name} is {UNSAFE_SERIALIZER}")
    if "diagnostics" in (conf.taskplane_job_families or []):
        problems.append("taskplane_job_families enables the diagnostics job types")
    return problems


def web_problems(
    flask_config: Mapping[str, Any], environ: Mapping[str, str], token_count: int
) -> list[str]:
    problems = []
    if not flask_config.get("SECRET_KEY"):
        problems.append("TASKPLANE_SECRET_KEY is not set")
    if token_count == 0:
        problems.append(
            "TASKPLANE_API_TOKENS has no tokens (create one with 'flask --app wsgi token create')"
        )
    if flask_config.get("DEBUG") or environ.get("FLASK_DEBUG", "").lower() in ("1", "true"):
        problems.append("debug mode is on (FLASK_DEBUG)")
    return problems


def refuse_if_any(problems: list[str]) -> None:
    if problems:
        raise SystemExit(
            "production refuses to start with insecure settings:\n  - " + "\n  - ".join(problems)
        )
