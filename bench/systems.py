"""The three systems under test, started as real processes with tests.services.

The plain baseline, the guarded baseline (plain Celery set up for Taskplane's
guarantees) and Taskplane are served the same way (gunicorn with Taskplane's
gunicorn.conf.py settings); each gets a RabbitMQ vhost and a Redis database of
its own. The baselines run a prefork ``celery worker -c 2``; Taskplane runs
its worker groups as its README says (``TASKPLANE_WORKER_GROUP=<group>``, the
group that ``taskplane_queues`` gives the job's queue), pool, concurrency and
prefetch from its own config. A system knows how to start its web and workers,
what request submits each kind of job, and how to tell from Redis that its
jobs are done.

Two knobs for experiments with Taskplane's workers: ``BENCH_TASKPLANE_WORKER_ARGS``
(words appended to each Taskplane worker's argv, e.g. ``--prefetch-multiplier 8``)
and ``BENCH_TASKPLANE_WORKERS=K`` (K worker processes of the no-op job's group
for the no-op phases instead of one; distinct ``-n`` names).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pika
import redis

from tests.services import ROOT, VENV_BIN, Platform, Process, free_port, wait_until

NOOP = "noop"  # the job kinds: nothing at all, and one POST to the HTTP sink
WEBHOOK = "webhook"
CHUNK = 1000  # keys per pipelined Redis round trip
READY = ("SUCCESS", "FAILURE", "REVOKED")  # Celery's finished states
# A warm shutdown takes ~2 s. Stopped mid-drain, a prefork worker can take 30 s
# more: its pool children wait in billiard's _ensure_messages_consumed for
# results the main process, already in Pool.join, no longer reads. Past this,
# the group is signalled (only after the phase's figures are taken).
WARM_STOP_S = 8
WORKERS_ENV = "BENCH_TASKPLANE_WORKERS"
WORKER_ARGS_ENV = "BENCH_TASKPLANE_WORKER_ARGS"


def consumer_count(broker_url: str, queue: str) -> int:
    """Consumers on ``queue`` now (a passive declare; the management API lags by seconds)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        connection.close()


def parse_moment(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 timestamp (naive means UTC)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 / RFC 3339 timestamp (naive means UTC)."""
    return parse_moment(text).timestamp()


def _chunks(items: list[str], size: int = CHUNK) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class System:
    """One system under test: its processes, its broker vhost and its Redis database."""

    name = ""
    queues = {NOOP: "", WEBHOOK: ""}  # the queue its workers consume each kind from

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
        self.workers: dict[str, list[Process]] = {}  # job kind -> its running workers

    # -- processes ------------------------------------------------------------------

    def start_web(self) -> str:
        raise NotImplementedError

    def worker_specs(self, kind: str) -> list[tuple[str, list[str], dict[str, str]]]:
        """(process name, argv, extra environment) of each worker that runs ``kind``."""
        raise NotImplementedError

    def start_workers(self, kind: str = NOOP, timeout: float = 90) -> list[Process]:
        """The workers for ``kind``, returned once each consumes its queue."""
        processes = [
            self.platform._start(name, argv, extra) for name, argv, extra in self.worker_specs(kind)
        ]
        self.workers[kind] = processes
        queue = self.queues[kind]
        try:
            wait_until(
                lambda: (
                    any(self.platform._dead(p) for p in processes)
                    or consumer_count(self.broker_url, queue) >= len(processes)
                ),
                timeout,
                interval=0.25,
                what=f"{len(processes)} {self.name} worker(s) to consume {queue}",
            )
        except Exception:
            self.stop_workers(kind)  # no half-started workers left for later phases
            raise
        return processes

    def stop_workers(self, kind: str = NOOP) -> None:
        """Warm shutdown: running jobs finish, reserved messages go back to the queue.

        SIGTERM goes to the worker's main process only (Process.stop signals the
        whole group, whose pool children would die mid-job); the group is
        signalled only if the worker has not exited after WARM_STOP_S.
        """
        for process in self.workers.pop(kind, []):
            if process.alive():
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.popen.wait(WARM_STOP_S)
                except subprocess.TimeoutExpired:
                    print(
                        f"[bench] {process.name} still running {WARM_STOP_S}s after SIGTERM; "
                        "signalling its process group",
                        flush=True,
                    )
            process.stop()
            if process in self.platform.processes:
                self.platform.processes.remove(process)

    def stop(self) -> None:
        self.workers.clear()
        self.platform.stop_all()

    # -- what submits a job -----------------------------------------------------------

    def noop_request(self) -> tuple[str, str]:
        """(path, JSON body) of a request that submits one no-op job."""
        raise NotImplementedError

    def webhook_request(self, url: str, body: Any) -> tuple[str, str]:
        """(path, JSON body) of a request that submits one POST of ``body`` to ``url``."""
        raise NotImplementedError

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
    """The plain baseline, bench/baseline/app.py: Celery's defaults, classic queue."""

    name = "baseline"
    module = "bench.baseline.app"
    queues = {NOOP: "celery", WEBHOOK: "celery"}

    def start_web(self, timeout: float = 60) -> str:
        port = free_port()
        argv = [
            str(VENV_BIN / "gunicorn"),
            "-c",
            str(ROOT / "bench" / "baseline" / "gunicorn_conf.py"),
            f"{self.module}:web",
        ]
        process = self.platform._start(
            f"{self.name}-web", argv, {"BENCH_BIND": f"127.0.0.1:{port}"}
        )
        self.web = process
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: self.platform._dead(process) or httpx.get(base + "/", timeout=1).status_code,
            timeout,
            what=f"the {self.name} gunicorn to answer",
        )
        return base

    def worker_specs(self, kind: str) -> list[tuple[str, list[str], dict[str, str]]]:
        # One worker for both kinds: the user's app has one queue.
        argv = [str(VENV_BIN / "celery"), "-A", self.module, "worker", "-c", "2"]
        return [(f"{self.name}-worker", argv, {})]

    def noop_request(self) -> tuple[str, str]:
        return "/jobs", "{}"

    def webhook_request(self, url: str, body: Any) -> tuple[str, str]:
        return "/webhooks", json.dumps({"url": url, "body": body})

    @staticmethod
    def _meta_key(job_id: str) -> str:
        return f"celery-task-meta-{job_id}"

    def _metas(self, job_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """(id, result meta) of each job with a meta in Redis (a STARTED one too)."""
        found = []
        for chunk in _chunks(job_ids):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.get(self._meta_key(job_id))
            for job_id, raw in zip(chunk, pipe.execute(), strict=True):
                if raw:
                    found.append((job_id, json.loads(raw)))
        return found

    def done(self, job_ids: list[str]) -> dict[str, bool]:
        # task_track_started (the guarded baseline) stores a STARTED meta first.
        return {
            job_id: meta["status"] == "SUCCESS"
            for job_id, meta in self._metas(job_ids)
            if meta.get("status") in READY
        }

    def finish_times(self, job_ids: list[str]) -> list[float]:
        return [
            parse_time(meta["date_done"])
            for _, meta in self._metas(job_ids)
            if meta.get("status") in READY and meta.get("date_done")
        ]


class Guarded(Baseline):
    """The guarded baseline, bench/baseline/guarded.py: late acks, confirms, a quorum queue."""

    name = "guarded"
    module = "bench.baseline.guarded"


class Taskplane(System):
    """Taskplane, every guarantee on; each kind of job on the worker group that runs its
    queue (today "short" for diagnostics, "io" for webhooks)."""

    name = "taskplane"
    queues = {NOOP: "diagnostics", WEBHOOK: "webhooks"}

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

    def group(self, kind: str) -> str:
        """The worker group that runs ``kind``'s queue, from Taskplane's config
        (``taskplane_queues``): the bench never assumes which group that is."""
        return self.app.conf.taskplane_queues[self.queues[kind]]["group"]

    def worker_specs(self, kind: str) -> list[tuple[str, list[str], dict[str, str]]]:
        """``celery -A tasks worker`` per group, as the README runs them: pool, concurrency,
        prefetch and processes per host come from the group's config, never from here
        (BENCH_TASKPLANE_WORKERS overrides the process count of the no-op job's group)."""
        from tasks.core.switches import group_processes

        group = self.group(kind)
        count = worker_count() if kind == NOOP else group_processes(self.app, group)
        specs = []
        for index in range(1, count + 1):
            name = f"{self.name}-{group}" + (f"-{index}" if count > 1 else "")
            argv = [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-n", f"{name}@%h"]
            specs.append((name, argv + worker_args(), {"TASKPLANE_WORKER_GROUP": group}))
        return specs

    def noop_request(self) -> tuple[str, str]:
        return "/jobs", json.dumps({"type": "diagnostics.echo", "payload": {}})

    def webhook_request(self, url: str, body: Any) -> tuple[str, str]:
        job = {"type": "webhook.deliver", "payload": {"url": url, "body": body}}
        return "/jobs", json.dumps(job)

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

    def record_bytes(self, job_ids: list[str]) -> list[int]:
        """Redis's own ``MEMORY USAGE`` of each job's record (all of its hash fields)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.memory_usage(self._key(job_id), samples=0)
        return [size for size in pipe.execute() if size]

    def idle_times(self, job_id: str) -> float | None:
        created, started = self.redis.hmget(self._key(job_id), "created_at", "started_at")
        if not created or not started:
            return None
        # Subtracted as datetimes: two epoch floats near 1.8e9 lose ~0.1 us each, which
        # turned a 5 ms gap into 5.0001 ms.
        gap = parse_moment(started.decode()) - parse_moment(created.decode())
        return gap.total_seconds() * 1000.0


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


def workers_rss(processes: list[Process]) -> dict[str, Any]:
    """RSS of workers: their largest pool child and their largest own process.

    A prefork pool's jobs run in its children; a threads pool has none, its jobs
    run in the worker process itself. ``worker`` is the figure that holds a job
    (the child, else the process) and ``measured`` says which it is.
    """
    alive = [p for p in processes if p.alive()]
    pool = [children_rss(p) for p in alive]
    child_each = [v for figures in pool for v in figures["each"]]
    own = [v for v in (rss_mb(p.pid) for p in alive) if v]
    child = max(child_each) if child_each else None
    process = round(max(own), 1) if own else None
    return {
        "worker_child": child,
        "worker_process": process,
        "worker": child if child is not None else process,
        "measured": "pool child" if child is not None else "worker process (no pool children)",
        "worker_children_each": child_each,
        "worker_processes_each": [round(v, 1) for v in own],
    }


def worker_count() -> int:
    """K workers for the no-op phases (BENCH_TASKPLANE_WORKERS, default 1)."""
    count = int(os.environ.get(WORKERS_ENV) or 1)
    if count < 1:
        raise ValueError(f"{WORKERS_ENV} must be at least 1, not {count}")
    return count


def worker_args() -> list[str]:
    """Words appended to each Taskplane worker's argv (BENCH_TASKPLANE_WORKER_ARGS)."""
    return shlex.split(os.environ.get(WORKER_ARGS_ENV, ""))


def wait_for_web_workers(process: Process, count: int, timeout: float = 30) -> None:
    """gunicorn answers once one worker is up; wait for all ``count`` of them."""
    wait_until(
        lambda: len(children(process.pid)) >= count,
        timeout,
        what=f"{count} gunicorn workers",
    )
    time.sleep(0.5)  # let the last worker finish importing the app
