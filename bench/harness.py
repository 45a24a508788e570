"""The machinery every phase of ``make bench`` shares (bench/run.py, bench/backlog.py).

Services (vhosts, Redis databases, scratch directories and helper processes of
this run, all removed at the end), a Stack (a system under test with its vhost,
URL and figures), the Recorder of errors and warnings, the alternating rounds,
and the three measurements the no-op and the webhook job both get: submit at a
concurrency, drain a backlog, end to end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import pika

from bench import cpu_account, loadgen
from bench.report import merge_runs, percentile, rate
from bench.systems import NOOP, System
from tests.services import Process, RabbitMQ, RedisServer

BATCH_SIZE = 1000  # jobs per POST /jobs/batch
JSON_HEADERS = {"Content-Type": "application/json"}


class BenchTimeout(BaseException):
    """The whole run exceeded its time budget (BaseException: no phase swallows it)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- services: vhosts and Redis databases of our own ---------------------------------


class Services:
    """Every vhost, Redis database, scratch directory and process this run made, for cleanup."""

    def __init__(self) -> None:
        self.rabbitmq = RabbitMQ()
        self.redis_server = RedisServer()
        self.vhosts: list[str] = []
        self.databases: list[str] = []
        self.scratch: list[str] = []
        self.systems: list[System] = []
        self.processes: list[Process] = []  # helpers such as the HTTP sink
        self.run_id = uuid.uuid4().hex[:6]

    def vhost(self, role: str, queue_type: str = "quorum") -> tuple[str, str]:
        name = f"taskplane-bench-{role}-{self.run_id}"
        self.vhosts.append(name)
        if queue_type == "quorum":
            return name, self.rabbitmq.create_vhost(name)
        # The plain baseline keeps RabbitMQ's (and Celery's) default: classic queues.
        user = self.rabbitmq.parts.username or "guest"
        with self.rabbitmq.management as api:
            api.put(f"/vhosts/{quote(name, safe='')}", json={"default_queue_type": queue_type})
            api.put(
                f"/permissions/{quote(name, safe='')}/{quote(user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
        return name, self.rabbitmq.url_for_vhost(name)

    def drop_vhost(self, name: str) -> None:
        self.rabbitmq.delete_vhost(name)
        if name in self.vhosts:
            self.vhosts.remove(name)

    def database(self) -> str:
        _, url = self.redis_server.claim_database(owner=f"taskplane-bench-{os.getpid()}")
        self.databases.append(url)
        return url

    def scratch_dir(self, prefix: str) -> str:
        path = tempfile.mkdtemp(prefix=prefix)
        self.scratch.append(path)
        return path

    def purge(self, vhost: str, broker_url: str) -> int:
        """Drop every message in every queue of ``vhost``; returns how many."""
        with self.rabbitmq.management as api:
            names = [q["name"] for q in api.get(f"/queues/{quote(vhost, safe='')}").json()]
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        try:
            channel = connection.channel()
            return sum(channel.queue_purge(name).method.message_count for name in names)
        finally:
            connection.close()

    def cleanup(self) -> None:
        for system in self.systems:
            _quietly(system.stop)
        for process in self.processes:
            _quietly(process.stop)
        for name in list(self.vhosts):
            _quietly(lambda n=name: self.drop_vhost(n))
        for url in self.databases:
            _quietly(lambda u=url: self.redis_server.release_database(u))
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - cleanup goes on whatever one step did
        log(f"cleanup: {exc}")


# -- stacks, rounds and the record of what went wrong ------------------------------


@dataclass
class Stack:
    """A system under test with its vhost, its URL and the figures measured so far."""

    system: System
    vhost: str
    broker_url: str
    base: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    backlog: list[str] = field(default_factory=list)  # ids queued before its worker starts
    requests: dict[str, tuple[str, str]] = field(default_factory=dict)  # kind -> (path, body)

    @property
    def name(self) -> str:
        return self.system.name

    def section(self, kind: str) -> dict[str, Any]:
        """Where figures of ``kind`` go: the no-op job's at the top, the others under their
        kind (``figures["webhook"]``), so the keys of earlier runs keep their meaning."""
        if kind == NOOP:
            return self.figures
        return self.figures.setdefault(kind, {})


def where(stack: Stack, kind: str, what: str) -> str:
    """How the log names a step: "taskplane drain", "taskplane webhook drain"."""
    return f"{stack.name} {what}" if kind == NOOP else f"{stack.name} {kind} {what}"


def round_shares(jobs: int) -> list[int]:
    """N split into 2 to 5 rounds (about 1,000 each at N=5,000)."""
    rounds = min(5, max(2, jobs // 1000))
    return [jobs // rounds + (1 if i < jobs % rounds else 0) for i in range(rounds)]


def alternate(stacks: list[Stack], rounds: int) -> Iterator[tuple[int, Stack]]:
    """(round, stack) with the order flipped every round: A B C, C B A, A B C..."""
    for index in range(rounds):
        for stack in stacks if index % 2 == 0 else stacks[::-1]:
            yield index, stack


class PhaseIncomplete(Exception):
    def __init__(self, message: str, partial: dict[str, Any]):
        super().__init__(message)
        self.partial = partial


class Recorder:
    """Errors (a phase failed) and warnings (it ran, but not cleanly) of the run."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def attempt(self, where: str, action: Callable[[], Any]) -> Any:
        """``action()``, or None after recording why it failed."""
        try:
            return action()
        except PhaseIncomplete as exc:
            self.errors.append(f"{where}: {exc}")
            log(f"{where}: FAILED: {exc}")
            return exc.partial
        except Exception as exc:  # noqa: BLE001 - report it, measure the rest
            self.errors.append(f"{where}: {type(exc).__name__}: {exc}")
            log(f"{where}: FAILED: {exc}\n{traceback.format_exc()}")
            return None

    def warn(self, where: str, problem: str) -> None:
        self.warnings.append(f"{where}: {problem}")
        log(f"WARNING {where}: {problem}")

    def check(self, where: str, result: dict[str, Any]) -> None:
        for problem in _load_problems(result):
            self.warn(where, problem)


def _load_problems(result: dict[str, Any]) -> list[str]:
    """What went wrong in a load run: non-2xx answers, socket errors, a cut-short run."""
    problems = []
    if result.get("non_2xx"):
        problems.append(f"{result['non_2xx']} non-2xx answers {result.get('statuses', {})}")
    if any((result.get("socket_errors") or {}).values()):
        problems.append(f"socket errors {result['socket_errors']}")
    if result.get("truncated"):
        problems.append(f"only {result['requests']} requests before the phase timeout")
    if result.get("failures"):
        problems.append(f"{len(result['failures'])} batches refused, e.g. {result['failures'][0]}")
    return problems


# -- submit, drain, end to end: for every kind of job ------------------------------------


def submit_rounds(
    stacks: list[Stack],
    shares: list[int],
    concurrency: int,
    timeout_s: float,
    recorder: Recorder,
    keep_ids: bool = False,
    kind: str = NOOP,
) -> None:
    """N submits of ``kind`` per system at ``concurrency``, in alternating rounds, merged
    per system; with ``keep_ids`` the ids of the accepted jobs go to ``stack.backlog``."""
    key = f"submit_c{concurrency}"
    runs: dict[str, list[dict[str, Any]]] = {stack.name: [] for stack in stacks}
    for index, stack in alternate(stacks, len(shares)):
        path, body = stack.requests[kind]
        run = recorder.attempt(
            where(stack, kind, f"{key} round {index + 1}"),
            partial(
                loadgen.submit_load,
                stack.base + path,
                body,
                shares[index],
                concurrency,
                timeout_s,
                collect_ids=keep_ids,
            ),
        )
        if run is not None:
            stack.backlog += run.pop("ids", [])
            runs[stack.name].append(run)
    for stack in stacks:
        if runs[stack.name]:
            merged = merge_runs(runs[stack.name])
            stack.section(kind)[key] = merged
            recorder.check(where(stack, kind, key), merged)


def wait_done(system: System, ids: list[str], timeout_s: float) -> tuple[int, int, int]:
    """Poll Redis (pipelined) until every job is done; (succeeded, failed, unfinished)."""
    remaining = set(ids)
    succeeded = failed = 0
    deadline = time.monotonic() + timeout_s
    while remaining and time.monotonic() < deadline:
        finished = system.done(list(remaining))
        remaining.difference_update(finished)
        succeeded += sum(1 for ok in finished.values() if ok)
        failed += sum(1 for ok in finished.values() if not ok)
        if remaining:
            time.sleep(0.2)
    return succeeded, failed, len(remaining)


def drain_phase(system: System, ids: list[str], timeout_s: float) -> dict[str, Any]:
    """The worker alone on a backlog: jobs finished per second, first to last finish."""
    succeeded, failed, unfinished = wait_done(system, ids, timeout_s)
    times = sorted(system.finish_times(ids))
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    result = {
        "jobs": len(ids),
        "succeeded": succeeded,
        "failed": failed,
        "unfinished": unfinished,
        "seconds": seconds,
        "per_s": rate(len(times) - 1, seconds),
    }
    if unfinished:
        raise PhaseIncomplete(f"{unfinished} of {len(ids)} jobs not finished", result)
    return result


def drain_each(stacks: list[Stack], kind: str, timeout_s: float, recorder: Recorder) -> None:
    """Each system's workers for ``kind`` started, in turn, on the backlog queued for them."""
    for stack in stacks:
        log(f"{stack.name}: starting the {kind} worker(s) on a backlog of {len(stack.backlog)}")
        started = recorder.attempt(
            where(stack, kind, "worker"), partial(stack.system.start_workers, kind)
        )
        if started is None:
            continue
        drain = recorder.attempt(
            where(stack, kind, "drain"),
            partial(drain_phase, stack.system, stack.backlog, timeout_s),
        )
        if drain is not None:
            stack.section(kind)["drain"] = drain
            if drain["failed"]:
                recorder.warn(where(stack, kind, "drain"), f"{drain['failed']} jobs failed")
        stack.backlog = []


def e2e_round(stack: Stack, jobs: int, timeout_s: float, kind: str = NOOP) -> dict[str, Any]:
    """``jobs`` submitted at c16 while the worker runs; first submit to last finish."""
    path, body = stack.requests[kind]
    groups = cpu_groups(stack, kind)
    cpu_before = cpu_account.snapshot(groups)
    began = time.time()
    load = loadgen.submit_load(stack.base + path, body, jobs, 16, timeout_s, collect_ids=True)
    ids = load.pop("ids")
    succeeded, failed, unfinished = wait_done(stack.system, ids, timeout_s)
    seen = time.time()
    cpu_after = cpu_account.snapshot(groups)
    finish_times = stack.system.finish_times(ids)
    result = {
        "jobs": len(ids),
        "succeeded": succeeded,
        "failed": failed,
        "unfinished": unfinished,
        "seconds": (max(finish_times) if finish_times else seen) - began,
        "client_seconds": seen - began,
        "submit": load,
        "cpu_s": {name: cpu_after[name] - cpu_before[name] for name in groups},
    }
    if unfinished:
        raise PhaseIncomplete(f"{unfinished} of {len(ids)} jobs not finished", result)
    return result


def cpu_groups(stack: Stack, kind: str) -> dict[str, list[int]]:
    """The processes whose CPU an end-to-end round of ``stack`` uses: its web, its
    workers, and the broker and Redis (which serve only this system while it runs)."""
    system = stack.system
    return {
        "web": [system.web.pid] if system.web is not None else [],
        "worker": [p.pid for p in system.workers.get(kind, [])],
        "rabbitmq": cpu_account.service_pids("beam.smp"),
        "redis": cpu_account.service_pids("redis-server"),
    }


def e2e_phase(
    stacks: list[Stack],
    shares: list[int],
    timeout_s: float,
    recorder: Recorder,
    kind: str = NOOP,
) -> None:
    """End to end in alternating rounds; jobs/s over the summed round times."""
    rounds: dict[str, list[dict[str, Any]]] = {stack.name: [] for stack in stacks}
    for index, stack in alternate(stacks, len(shares)):
        outcome = recorder.attempt(
            where(stack, kind, f"e2e round {index + 1}"),
            partial(e2e_round, stack, shares[index], timeout_s, kind),
        )
        if outcome is not None:
            rounds[stack.name].append(outcome)
    for stack in stacks:
        done = rounds[stack.name]
        if not done:
            continue
        finished = sum(r["succeeded"] + r["failed"] for r in done)
        seconds = sum(r["seconds"] for r in done)
        submit = merge_runs([r["submit"] for r in done])
        stack.section(kind)["e2e"] = {
            "jobs": sum(r["jobs"] for r in done),
            "succeeded": sum(r["succeeded"] for r in done),
            "failed": sum(r["failed"] for r in done),
            "unfinished": sum(r["unfinished"] for r in done),
            "seconds": seconds,
            "per_s": rate(finished, seconds),
            "per_s_each": [rate(r["succeeded"] + r["failed"], r["seconds"]) for r in done],
            "submit": {k: v for k, v in submit.items() if k != "histogram_us"},
            # CPU milliseconds per finished job, by process (bench/cpu_account.py)
            "cpu_ms_per_job": cpu_account.per_job_ms(
                {name: 0.0 for name in done[0]["cpu_s"]},
                {name: sum(r["cpu_s"][name] for r in done) for name in done[0]["cpu_s"]},
                finished,
            ),
        }
        recorder.check(where(stack, kind, "e2e submit"), submit)
        failed = stack.section(kind)["e2e"]["failed"]
        if failed:
            recorder.warn(where(stack, kind, "e2e"), f"{failed} jobs failed")


def batch_phase(
    base: str, job: dict[str, Any], jobs: int, timeout_s: float, collect_ids: bool = False
) -> dict[str, Any]:
    """POST /jobs/batch with BATCH_SIZE copies of ``job`` per request from two clients.

    The first batch is a probe (and the warm-up), not counted in the rate; its
    jobs are queued all the same. ``collect_ids``: ``ids`` holds every accepted
    job's id, the probe's first, then batch by batch in the order the answers came.
    """
    body = json.dumps({"jobs": [job] * BATCH_SIZE})
    url = base + "/jobs/batch"
    with httpx.Client(timeout=30) as client:
        probe = client.post(url, content=body, headers=JSON_HEADERS)  # also the warm-up
    if probe.status_code in (404, 405):
        log("batch: not available")
        return {"available": False, "status": probe.status_code}
    if probe.status_code != 202 or len(probe.json().get("jobs", [])) != BATCH_SIZE:
        raise RuntimeError(f"POST /jobs/batch answered {probe.status_code}: {probe.text[:300]}")
    ids = [j["id"] for j in probe.json()["jobs"]] if collect_ids else []
    batches = max(1, math.ceil(jobs / BATCH_SIZE))
    tickets = iter(range(batches))
    lock = threading.Lock()
    latencies: list[float] = []
    accepted = [0]
    failures: list[str] = []
    deadline = time.monotonic() + timeout_s

    def client_loop() -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    if next(tickets, None) is None:
                        return
                started = time.perf_counter()
                answer = client.post(url, content=body, headers=JSON_HEADERS)
                elapsed = (time.perf_counter() - started) * 1000.0
                back = answer.json()["jobs"] if answer.status_code == 202 else None
                with lock:
                    latencies.append(elapsed)
                    if back is not None:
                        accepted[0] += len(back)
                        if collect_ids:
                            ids.extend(j["id"] for j in back)
                    else:
                        failures.append(f"{answer.status_code} {answer.text[:120]}")

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(2)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 30)
    seconds = time.perf_counter() - began
    result = {
        "available": True,
        "jobs": accepted[0],
        "batch_size": BATCH_SIZE,
        "batches": len(latencies),
        "seconds": seconds,
        "per_s": rate(accepted[0], seconds),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "truncated": accepted[0] < batches * BATCH_SIZE,
        "requests": len(latencies),
    }
    if collect_ids:
        result["ids"] = ids
    if failures:
        result["failures"] = [f.strip() for f in failures]
    return result
