"""Session fixtures: real RabbitMQ (own vhost), real Redis (own db), real processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.peers import HttpTarget, SmtpSink
from tests.services import VENV_BIN, Platform, RabbitMQ, RedisServer


@pytest.fixture(scope="session")
def rabbitmq() -> RabbitMQ:
    return RabbitMQ()


@pytest.fixture(scope="session")
def session_vhost(rabbitmq: RabbitMQ) -> Iterator[tuple[str, str]]:
    vhost = f"taskplane-test-{uuid.uuid4().hex[:8]}"
    url = rabbitmq.create_vhost(vhost)
    yield vhost, url
    rabbitmq.delete_vhost(vhost)


@pytest.fixture(scope="session")
def session_redis_url() -> Iterator[str]:
    server = RedisServer()
    _, url = server.claim_database(owner=f"pytest-{os.getpid()}")
    yield url
    server.release_database(url)


@pytest.fixture(scope="session")
def http_target() -> Iterator[HttpTarget]:
    target = HttpTarget().start()
    yield target
    target.stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def platform(
    session_vhost: tuple[str, str],
    session_redis_url: str,
    smtp_sink: SmtpSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TASKPLANE_ENV": "testing",
        "CELERY_BROKER_URL": session_vhost[1],
        "CELERY_RESULT_BACKEND": session_redis_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_sink.port),
        "PYTHONUNBUFFERED": "1",
        # JSON log lines, as in production, so tests can follow a trace id.
        "TASKPLANE_LOG_JSON": "1",
    }
    platform = Platform(env=env, log_dir=tmp_path_factory.mktemp("process-logs"))
    yield platform
    platform.stop_all()


@pytest.fixture(scope="session")
def worker(platform: Platform):  # noqa: ANN201 - tests.services.Process
    return platform.start_worker("session")


@pytest.fixture(scope="session")
def web(platform: Platform):  # noqa: ANN201 - (tests.services.Process, base URL)
    return platform.start_web()


@pytest.fixture(scope="session")
def web_url(web) -> str:  # noqa: ANN001
    return web[1]


@pytest.fixture()
def api(web_url: str, worker) -> Iterator[httpx.Client]:  # noqa: ANN001
    """An HTTP client against gunicorn, with a worker consuming every queue."""
    with httpx.Client(base_url=web_url, timeout=10) as client:
        yield client
