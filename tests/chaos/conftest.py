"""A platform of its own for tests that break things.

Its own RabbitMQ node and Redis server (tests/isolated.py), so stopping the
broker or Redis cannot disturb any other test; its own gunicorn and two
worker nodes, started and restarted through tests/services.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from tests.chaos.harness import Outcome, header
from tests.isolated import RabbitNode, RedisNode, scratch_dir
from tests.peers import SmtpSink
from tests.services import VENV_BIN, Platform, Process

OUTCOMES = pytest.StashKey[list[Outcome]]()
# Jobs per streaming scenario: small in CI, 2,500 (10,000 over the four
# streaming scenarios) with make chaos.
CHAOS_JOBS = int(os.environ.get("CHAOS_JOBS", "120"))


@dataclass
class ChaosPlatform:
    rabbit: RabbitNode
    redis_node: RedisNode
    platform: Platform
    web_url: str
    store: redis.Redis
    workers: dict[str, Process] = field(default_factory=dict)

    def start_worker(self, name: str) -> Process:
        self.workers[name] = self.platform.start_worker(name, concurrency=2)
        return self.workers[name]

    def ensure_workers(self) -> None:
        """Both workers up (a scenario may have killed or stopped one)."""
        for name in ("chaos-a", "chaos-b"):
            if name not in self.workers or not self.workers[name].alive():
                self.start_worker(name)


@pytest.fixture(scope="session")
def chaos_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosPlatform]:
    base = scratch_dir("tp-chaos-")
    rabbit = RabbitNode(base).start()
    redis_node = RedisNode(base).start()
    smtp = SmtpSink().start()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TASKPLANE_ENV": "testing",
        "CELERY_BROKER_URL": rabbit.url,
        "CELERY_RESULT_BACKEND": redis_node.url,
        "SMTP_PORT": str(smtp.port),
        "PYTHONUNBUFFERED": "1",
    }
    platform = Platform(env=env, log_dir=tmp_path_factory.mktemp("chaos-logs"))
    try:
        _, web_url = platform.start_web()
        chaos = ChaosPlatform(
            rabbit, redis_node, platform, web_url, redis.Redis.from_url(redis_node.url)
        )
        chaos.ensure_workers()
        yield chaos
    finally:
        platform.stop_all()
        smtp.stop()
        redis_node.stop()
        rabbit.stop()


@pytest.fixture()
def chaos(chaos_platform: ChaosPlatform, request: pytest.FixtureRequest) -> ChaosPlatform:
    chaos_platform.ensure_workers()
    if not chaos_platform.rabbit.is_up():
        chaos_platform.rabbit.start_app()
    if not chaos_platform.redis_node.is_up():
        chaos_platform.redis_node.start()
    return chaos_platform


@pytest.fixture()
def record_outcome(request: pytest.FixtureRequest):  # noqa: ANN201
    def record(outcome: Outcome) -> Outcome:
        request.config.stash.setdefault(OUTCOMES, []).append(outcome)
        print(f"\n{header()}\n{outcome.row()}")
        for note in outcome.notes:
            print(f"  note: {note}")
        return outcome

    return record


def pytest_terminal_summary(terminalreporter, config) -> None:  # noqa: ANN001
    outcomes = config.stash.get(OUTCOMES, [])
    if outcomes:
        terminalreporter.section(f"chaos scenarios ({CHAOS_JOBS} jobs per streaming scenario)")
        terminalreporter.write_line(header())
        for outcome in outcomes:
            terminalreporter.write_line(outcome.row())
