"""The two systems under test, started as real processes with tests.services.

Both are served the same way (gunicorn with Taskplane's gunicorn.conf.py
settings, a prefork ``celery worker -c 2``); each gets a RabbitMQ vhost and a
Redis database of its own. A system knows how to start its web and worker
and how to tell from Redis that its jobs are done.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pika
import redis

from tests.services import ROOT, VENV_BIN, Platform, Process, free_port, wait_until

CHUNK = 1000  # keys per pipelined Redis round trip


def consumer_count(broker_url: str, queue: str) -> int:
    """Consumers on ``queue`` now (a passive declare; the management API lags by seconds)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        connection.close()


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 / RFC 3339 timestamp (naive means UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _chunks(items: list[str], size: int = CHUNK) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class System:
    """One system under test: its processes, its broker vhost and its Redis database."""

    name = ""
    queue = ""  # the queue its worker consumes the benchmark's jobs from

    def __init__(self, broker_url: str, redis_url: str, log_dir: Path, metrics_dir: str):
        self.broker_url = broker_url
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            "WEB_CONCURRENCY": "2",  # what Platform.start_web gives Taskplane
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("TASKPLANE_WORKER_GROUP", None)
        self.platform = Platform(env=env, log_dir=log_dir)
        self.web: Process | None = None
        self.worker: Process | None = None

    # -- processes ------------------------------------------------------------------

    def start_web(self) -> str:
        raise NotImplementedError

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def start_worker(self, timeout: float = 90) -> Process:
        process = self.platform._start(f"{self.name}-worker", self.worker_argv())
        self.worker = process
        wait_until(
            lambda: self.platform._dead(process) or consumer_count(self.broker_url, self.queue),
            timeout,
            interval=0.25,
            what=f"the {self.name} worker to consume {self.queue}",
        )
        return process

    def stop(self) -> None:
        self.platform.stop_all()

    # -- job state in Redis -------------------------------------------------------------

    def done(self, job_ids: list[str]) -> dict[str, bool]:
        """Of ``job_ids``, those finished: id -> True (succeeded) or False (failed)."""
        raise NotImplementedError

    def finish_times(self, job_ids: list[str]) -> list[float]:
        """Epoch seconds at which each finished job finished, as recorded by the worker."""
        raise NotImplementedError

    def idle_times(self, job_id: str) -> float | None:
        """started - created in ms for one job, where the system records both."""
        return None


class Baseline(System):
    name = "baseline"
    queue = "celery"

    def start_web(self, timeout: float = 60) -> str:
        port = free_port()
        argv = [
            str(VENV_BIN / "gunicorn"),
            "-c",
            str(ROOT / "bench" / "baseline" / "gunicorn_conf.py"),
            "bench.baseline.app:web",
        ]
        process = self.platform._start("baseline-web", argv, {"BENCH_BIND": f"127.0.0.1:{port}"})
        self.web = process
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: self.platform._dead(process) or httpx.get(base + "/", timeout=1).status_code,
            timeout,
            what="the baseline gunicorn to answer",
        )
        return base

    def worker_argv(self) -> list[str]:
        return [str(VENV_BIN / "celery"), "-A", "bench.baseline.app", "worker", "-c", "2"]

    @staticmethod
    def _meta_key(job_id: str) -> str:
        return f"celery-task-meta-{job_id}"

    def done(self, job_ids: list[str]) -> dict[str, bool]:
        finished: dict[str, bool] = {}
        for chunk in _chunks(job_ids):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.exists(self._meta_key(job_id))
            for job_id, present in zip(chunk, pipe.execute(), strict=True):
                if present:
                    finished[job_id] = True
        return finished

    def finish_times(self, job_ids: list[str]) -> list[float]:
        times = []
        for chunk in _chunks(job_ids):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.get(self._meta_key(job_id))
            for raw in pipe.execute():
                if raw:
                    times.append(parse_time(json.loads(raw)["date_done"]))
        return times


class Taskplane(System):
    name = "taskplane"
    queue = "diagnostics"

    def __init__(self, broker_url: str, redis_url: str, log_dir: Path, metrics_dir: str):
        super().__init__(broker_url, redis_url, log_dir, metrics_dir)
        self.platform.env["TASKPLANE_ENV"] = "development"

    def start_web(self) -> str:
        self.web, base = self.platform.start_web(timeout=60)
        return base

    @cached_property
    def app(self) -> Any:
        """A Taskplane app in this process, on this system's vhost and database (as the web
        has one): for starting workflows and submitting through the submission core."""
        from tasks.factory import create_celery_app

        return create_celery_app(
            "development",
            overrides={"broker_url": self.broker_url, "result_backend": self.redis_url},
            patient_storage=False,
        )

    def worker_argv(self) -> list[str]:
        return [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-c", "2"]

    @staticmethod
    def _key(job_id: str) -> str:
        return f"taskplane:job:{job_id}"

    def done(self, job_ids: list[str]) -> dict[str, bool]:
        finished: dict[str, bool] = {}
        for chunk in _chunks(job_ids):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hget(self._key(job_id), "state")
            for job_id, state in zip(chunk, pipe.execute(), strict=True):
                if state == b"succeeded":
                    finished[job_id] = True
                elif state in (b"failed", b"cancelled"):
                    finished[job_id] = False
        return finished

    def finish_times(self, job_ids: list[str]) -> list[float]:
        times = []
        for chunk in _chunks(job_ids):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hget(self._key(job_id), "finished_at")
            times += [parse_time(raw.decode()) for raw in pipe.execute() if raw]
        return times

    def workflow_state(self, workflow_id: str) -> tuple[str | None, float | None]:
        """A workflow's state and, once finished, when (epoch seconds, as its last step
        recorded it)."""
        from tasks.core.workflows import PREFIX

        state, finished = self.redis.hmget(PREFIX + workflow_id, "state", "finished_at")
        return (
            state.decode() if state else None,
            parse_time(finished.decode()) if finished else None,
        )

    def idle_times(self, job_id: str) -> float | None:
        created, started = self.redis.hmget(self._key(job_id), "created_at", "started_at")
        if not created or not started:
            return None
        return (parse_time(started.decode()) - parse_time(created.decode())) * 1000.0


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children_rss(process: Process | None) -> dict[str, Any]:
    """RSS of each child of ``process`` (gunicorn workers, pool processes) and the largest."""
    if process is None or not process.alive():
        return {"max": None, "each": []}
    each = [value for value in (rss_mb(child) for child in children(process.pid)) if value]
    return {"max": max(each) if each else None, "each": [round(v, 1) for v in each]}


def wait_for_web_workers(process: Process, count: int, timeout: float = 30) -> None:
    """gunicorn answers once one worker is up; wait for all ``count`` of them."""
    wait_until(
        lambda: len(children(process.pid)) >= count,
        timeout,
        what=f"{count} gunicorn workers",
    )
    time.sleep(0.5)  # let the last worker finish importing the app
