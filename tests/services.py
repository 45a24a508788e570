"""The one helper that owns the services tests run against.

It finds RabbitMQ and Redis (started by ``make test`` through
``scripts/ensure-services.sh``), gives each test session its own RabbitMQ
vhost and Redis database, and starts and stops the platform's real processes
(``celery -A tasks worker``, gunicorn) as subprocesses with their logs kept.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"


def wait_until(
    check: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"
) -> object:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - report the last one on timeout
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RabbitMQ:
    """A RabbitMQ server reached through AMQP and its management API."""

    url: str = field(default_factory=lambda: os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER))
    management_port: int = 15672

    @property
    def parts(self):  # noqa: ANN201 - SplitResult
        return urlsplit(self.url)

    @property
    def management(self) -> httpx.Client:
        parts = self.parts
        return httpx.Client(
            base_url=f"http://{parts.hostname}:{self.management_port}/api",
            auth=(parts.username or "guest", parts.password or "guest"),
            timeout=10,
        )

    def url_for_vhost(self, vhost: str) -> str:
        return urlunsplit(self.parts._replace(path="/" + quote(vhost, safe="")))

    def create_vhost(self, vhost: str) -> str:
        user = self.parts.username or "guest"
        name = quote(vhost, safe="")
        with self.management as api:
            wait_until(
                lambda: api.get("/overview").status_code == 200,
                60,
                what="the RabbitMQ management API",
            )
            api.put(f"/vhosts/{name}", json={"default_queue_type": "quorum"}).raise_for_status()
            api.put(
                f"/permissions/{name}/{quote(user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
        return self.url_for_vhost(vhost)

    def delete_vhost(self, vhost: str) -> None:
        with self.management as api:
            api.delete(f"/vhosts/{quote(vhost, safe='')}")

    def queue(self, vhost: str, name: str) -> dict:
        with self.management as api:
            response = api.get(f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
            response.raise_for_status()
            return response.json()


@dataclass
class RedisServer:
    url: str = field(
        default_factory=lambda: os.environ.get("CELERY_RESULT_BACKEND", DEFAULT_BACKEND)
    )

    def claim_database(self, owner: str) -> tuple[int, str]:
        """An empty database (1-15) claimed for this session with a marker key."""
        parts = urlsplit(self.url)
        for db in range(1, 16):
            client = redis.Redis.from_url(urlunsplit(parts._replace(path=f"/{db}")))
            if client.set("taskplane:test-claim", owner, nx=True, ex=6 * 3600):
                if client.dbsize() == 1:
                    return db, urlunsplit(parts._replace(path=f"/{db}"))
                client.delete("taskplane:test-claim")
        raise RuntimeError("no empty Redis database (1-15) to run the tests in")

    def release_database(self, url: str) -> None:
        redis.Redis.from_url(url).flushdb()


class Process:
    """A platform process started by a test, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def json_lines(self) -> list[dict]:
        """The process's JSON log lines (TASKPLANE_LOG_JSON=1), parsed; other lines skipped."""
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        return lines

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


@dataclass
class Platform:
    """Environment for the platform's processes in one test session."""

    env: dict[str, str]
    log_dir: Path
    processes: list[Process] = field(default_factory=list)

    def start_worker(
        self,
        name: str | None = None,
        queues: Sequence[str] = (),
        concurrency: int | None = 2,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> Process:
        node = f"{name or 'test-' + uuid.uuid4().hex[:6]}@%h"
        argv = [
            str(VENV_BIN / "celery"),
            "-A",
            "tasks",
            "worker",
            "-n",
            node,
            "--loglevel=INFO",
            "--without-mingle",
        ]
        if concurrency is not None:  # None: the worker group's or Celery's default
            argv += ["-c", str(concurrency)]
        if queues:
            argv += ["-Q", ",".join(queues)]
        process = self._start(node.split("@")[0], argv, env)
        hostname = node.replace("%h", socket.gethostname())
        process.node = hostname  # type: ignore[attr-defined]
        wait_until(
            lambda: b" ready." in process.log_path.read_bytes() or self._dead(process),
            timeout,
            what=f"worker {hostname} to be ready",
        )
        self._dead(process)
        return process

    def start_beat(
        self, name: str | None = None, timeout: float = 30, env: dict[str, str] | None = None
    ) -> Process:
        """``celery -A tasks beat`` with Taskplane's scheduler, returned once it runs its loop.

        Its lease holder name (``beat@<host>:<pid>``) is in ``process.holder``.
        """
        name = name or f"beat-{uuid.uuid4().hex[:6]}"
        argv = [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--loglevel=INFO"]
        process = self._start(name, argv, env)
        process.holder = f"beat@{socket.gethostname()}:{process.pid}"  # type: ignore[attr-defined]
        wait_until(
            lambda: b"declared schedules:" in process.log_path.read_bytes() or self._dead(process),
            timeout,
            what=f"{name} to start its scheduler",
        )
        return process

    def start_web(self, timeout: float = 30) -> tuple[Process, str]:
        port = free_port()
        env = {"TASKPLANE_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"}
        argv = [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
        process = self._start(f"web-{port}", argv, env)
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: (
                self._dead(process)
                or httpx.get(base + "/health/live", timeout=1).status_code == 200
            ),
            timeout,
            what="gunicorn to answer",
        )
        self._dead(process)
        return process, base

    def start_flower(
        self, basic_auth: str, sees_worker: str, timeout: float = 30
    ) -> tuple[Process, str]:
        """Flower, returned once its event receiver has heard ``sees_worker``'s heartbeat.

        Flower answers /healthcheck before it consumes events; a job run in
        between is never in its task list (its event queue did not exist yet).
        """
        port = free_port()
        argv = [str(VENV_BIN / "celery"), "-A", "tasks", "flower"]
        env = {"FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": basic_auth}
        process = self._start(f"flower-{port}", argv, env)
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: (
                self._dead(process)
                or httpx.get(base + "/healthcheck", timeout=1).status_code == 200
            ),
            timeout,
            what="Flower to answer",
        )
        user, password = basic_auth.split(":", 1)
        wait_until(
            lambda: (
                self._dead(process)
                or httpx.get(base + "/api/workers?status=1", auth=(user, password), timeout=2)
                .json()
                .get(sees_worker)
            ),
            timeout,
            0.5,
            what=f"Flower to receive {sees_worker}'s events",
        )
        return process, base

    def _start(
        self, name: str, argv: Sequence[str], extra: dict[str, str] | None = None
    ) -> Process:
        process = Process(name, argv, {**self.env, **(extra or {})}, self.log_dir)
        self.processes.append(process)
        return process

    @staticmethod
    def _dead(process: Process) -> bool:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.log_tail()}")
        return False

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
