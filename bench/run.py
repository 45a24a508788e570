"""``make bench``: the ceiling, the baseline and Taskplane, measured in one run.

Usage: ``bench/run.sh [--quick] [--jobs N]`` (or BENCH_JOBS=N). Everything runs
on the local RabbitMQ and Redis over loopback, each system in a vhost and a
Redis database of its own, all removed at the end (also on error or Ctrl-C).

The ceiling first; then both systems are started side by side and every
phase takes turns between them (rounds A B, B A, ...), so a burst of load from
elsewhere on the machine lands on both rather than skewing one ratio:

1. both webs up, 2 s of warm-up load each; then HTTP submit with wrk while no
   worker runs, so the webs have the machine (queues purged between steps):
   N requests each at concurrency 1 (-t1 -c1); Taskplane's
   ``POST /jobs/batch`` (batches of 1,000 from two clients); N requests each
   at concurrency 16 (-t2 -c16), whose jobs stay queued. Rates are over the
   summed round times, percentiles from the merged wrk latency histograms.
2. each worker started on its backlog of N jobs: the drain rate, from the
   first to the last finish the worker recorded (the worker alone).
3. 50 single jobs each, one at a time, taking turns (the client polls Redis
   every millisecond; Taskplane's records also give started - created).
4. end to end: wrk -t2 -c16 submits N jobs per system (in rounds), logging
   the ids it got back; each round runs from its first submit to the last
   finish the worker recorded (Taskplane's ``finished_at``, Celery's
   ``date_done``), web and worker sharing the machine.
5. RSS of the largest gunicorn worker and of the largest pool child.
6. workflows on Taskplane's same worker: a 1 -> 100 -> 1 workflow (an echo of
   100 numbers, 100 echo steps mapped over them, a sum as the fan-in) started
   in-process with ``tasks.core.workflows.start``, timed from ``start()`` to
   the workflow's ``finished_at``: 102 steps / that time. Beside it, the same
   102 plain echo jobs, submitted as one batch through the submission core,
   first submit to last finish. 5 rounds (3 with --quick), one workflow at a
   time, workflow and plain taking turns (W P, P W, ...).

Results: the table on stdout, bench/out/results.json and bench/out/bench.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform as py_platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pika
import redis

from bench import ceiling, loadgen
from bench.report import (
    evaluate_targets,
    format_table,
    merge_runs,
    percentile,
    rate,
    summarize_ms,
)
from bench.systems import Baseline, System, Taskplane, children_rss, wait_for_web_workers
from tests.services import ROOT, RabbitMQ, RedisServer

OUT = ROOT / "bench" / "out"
JOB = {"type": "diagnostics.echo", "payload": {}}
JOB_BODY = json.dumps(JOB)
JSON_HEADERS = {"Content-Type": "application/json"}
WINDOW = 1000  # outstanding confirms in the ceiling's windowed publisher
PREFETCH = 100  # the ceiling consumer's prefetch
BATCH_SIZE = 1000
IDLE_SAMPLES = 50
IDLE_GAP_S = 0.05  # pause between idle samples, so each one meets an idle system
POLL_S = 0.001  # how often the idle phase polls Redis
WARMUP_S = 2
WORKFLOW_FAN = 100  # the workflow phase: 1 -> WORKFLOW_FAN -> 1
WORKFLOW_STEPS = WORKFLOW_FAN + 2
WORKFLOW_ROUNDS = 5  # 3 with --quick


class BenchTimeout(BaseException):
    """The whole run exceeded its time budget (BaseException: no phase swallows it)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- services: vhosts and Redis databases of our own ---------------------------------


class Services:
    """Every vhost, Redis database and scratch directory this run made, for cleanup."""

    def __init__(self) -> None:
        self.rabbitmq = RabbitMQ()
        self.redis_server = RedisServer()
        self.vhosts: list[str] = []
        self.databases: list[str] = []
        self.scratch: list[str] = []
        self.systems: list[System] = []
        self.run_id = uuid.uuid4().hex[:6]

    def vhost(self, role: str, queue_type: str = "quorum") -> tuple[str, str]:
        name = f"taskplane-bench-{role}-{self.run_id}"
        self.vhosts.append(name)
        if queue_type == "quorum":
            return name, self.rabbitmq.create_vhost(name)
        # The baseline keeps RabbitMQ's (and Celery's) default: classic queues.
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


# -- the machine ----------------------------------------------------------------


def machine_info(services: Services) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "python": py_platform.python_version(),
        "kernel": py_platform.release(),
        "load_generator": loadgen.describe(),
    }
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    try:
        with services.rabbitmq.management as api:
            overview = api.get("/overview").json()
        info["rabbitmq"] = overview.get("rabbitmq_version")
        info["erlang"] = overview.get("erlang_version")
    except Exception as exc:  # noqa: BLE001 - a missing version is not fatal
        info["rabbitmq"] = f"? ({exc})"
    try:
        info["redis"] = redis.Redis.from_url(services.redis_server.url).info("server")[
            "redis_version"
        ]
    except Exception as exc:  # noqa: BLE001
        info["redis"] = f"? ({exc})"
    for package in ("celery", "kombu", "pika", "gunicorn", "flask"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


# -- phases ------------------------------------------------------------------------


def run_ceiling(services: Services, jobs: int, timeout_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    queue = "bench.ceiling"
    vhost, url = services.vhost("ceiling-sync")
    log(f"ceiling: {jobs} publishes, each waiting for its confirm")
    result["publish_sync"] = ceiling.publish_sync(url, queue, jobs, timeout_s)
    services.drop_vhost(vhost)
    many = jobs * 4
    vhost, url = services.vhost("ceiling-window")
    log(f"ceiling: {many} publishes with {WINDOW} confirms outstanding")
    result["publish_window"] = ceiling.publish_window(url, queue, many, WINDOW, timeout_s)
    services.drop_vhost(vhost)
    vhost, url = services.vhost("ceiling-consume")
    ceiling.publish_window(url, queue, many, WINDOW, timeout_s)  # fill it, untimed
    log(f"ceiling: consuming {many} with prefetch {PREFETCH} and manual acks")
    result["consume"] = ceiling.consume(url, queue, many, PREFETCH, timeout_s)
    services.drop_vhost(vhost)
    return result


def warm_up(base: str) -> None:
    loadgen.submit_load(base + "/jobs", JOB_BODY, 0, 16, WARMUP_S)


def round_shares(jobs: int) -> list[int]:
    """N split into 2 to 5 rounds (about 1,000 each at N=5,000)."""
    rounds = min(5, max(2, jobs // 1000))
    return [jobs // rounds + (1 if i < jobs % rounds else 0) for i in range(rounds)]


@dataclass
class Stack:
    """A system under test with its vhost, its URL and the figures measured so far."""

    system: System
    vhost: str
    broker_url: str
    base: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    backlog: list[str] = field(default_factory=list)  # ids queued before its worker starts

    @property
    def name(self) -> str:
        return self.system.name


def alternate(stacks: list[Stack], rounds: int) -> Iterator[tuple[int, Stack]]:
    """(round, stack) with the order flipped every round: A B, B A, A B..."""
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

    def check(self, where: str, result: dict[str, Any]) -> None:
        for problem in _load_problems(result):
            self.warnings.append(f"{where}: {problem}")
            log(f"WARNING {where}: {problem}")


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


def submit_rounds(
    stacks: list[Stack],
    shares: list[int],
    concurrency: int,
    timeout_s: float,
    recorder: Recorder,
    keep_ids: bool = False,
) -> None:
    """N submits per system at ``concurrency``, in alternating rounds, merged per system."""
    key = f"submit_c{concurrency}"
    runs: dict[str, list[dict[str, Any]]] = {stack.name: [] for stack in stacks}
    for index, stack in alternate(stacks, len(shares)):
        run = recorder.attempt(
            f"{stack.name} {key} round {index + 1}",
            partial(
                loadgen.submit_load,
                stack.base + "/jobs",
                JOB_BODY,
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
            stack.figures[key] = merged
            recorder.check(f"{stack.name} {key}", merged)


def batch_phase(base: str, jobs: int, timeout_s: float) -> dict[str, Any]:
    """POST /jobs/batch with BATCH_SIZE jobs per request from two clients."""
    body = json.dumps({"jobs": [JOB] * BATCH_SIZE})
    url = base + "/jobs/batch"
    with httpx.Client(timeout=30) as client:
        probe = client.post(url, content=body, headers=JSON_HEADERS)  # also the warm-up
    if probe.status_code in (404, 405):
        log("batch: not available")
        return {"available": False, "status": probe.status_code}
    if probe.status_code != 202 or len(probe.json().get("jobs", [])) != BATCH_SIZE:
        raise RuntimeError(f"POST /jobs/batch answered {probe.status_code}: {probe.text[:300]}")
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
                with lock:
                    latencies.append(elapsed)
                    if answer.status_code == 202:
                        accepted[0] += len(answer.json()["jobs"])
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
    }
    if failures:
        result["failures"] = [f.strip() for f in failures]
    return result


def _one_idle_job(stack: Stack, client: httpx.Client, deadline: float) -> tuple[float, str]:
    """Submit one job and poll Redis until it is done; (submit -> done in ms, job id)."""
    began = time.perf_counter()
    answer = client.post("/jobs", content=JOB_BODY, headers=JSON_HEADERS)
    if answer.status_code != 202:
        raise RuntimeError(f"submit answered {answer.status_code}: {answer.text[:200]}")
    job_id = answer.json()["id"]
    while True:
        finished = stack.system.done([job_id])
        if finished:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not done within the idle phase's bound")
        time.sleep(POLL_S)
    if not finished[job_id]:
        raise RuntimeError(f"job {job_id} failed")
    return (time.perf_counter() - began) * 1000.0, job_id


def idle_phase(stacks: list[Stack], timeout_s: float, recorder: Recorder) -> None:
    """IDLE_SAMPLES single jobs per system, one at a time, the systems taking turns."""
    done_ms: dict[str, list[float]] = {stack.name: [] for stack in stacks}
    started_ms: dict[str, list[float]] = {stack.name: [] for stack in stacks}
    clients = {stack.name: httpx.Client(base_url=stack.base, timeout=10) for stack in stacks}
    deadline = time.monotonic() + timeout_s
    failed: set[str] = set()
    try:
        for sample, stack in alternate(stacks, IDLE_SAMPLES + 1):  # sample 0 warms up
            if stack.name in failed:
                continue
            time.sleep(IDLE_GAP_S)
            outcome = recorder.attempt(
                f"{stack.name} idle", partial(_one_idle_job, stack, clients[stack.name], deadline)
            )
            if outcome is None:
                failed.add(stack.name)
                continue
            if sample == 0:
                continue
            elapsed, job_id = outcome
            done_ms[stack.name].append(elapsed)
            gap = stack.system.idle_times(job_id)
            if gap is not None:
                started_ms[stack.name].append(gap)
    finally:
        for client in clients.values():
            client.close()
    for stack in stacks:
        if done_ms[stack.name]:
            figures: dict[str, Any] = {"submit_to_done": summarize_ms(done_ms[stack.name])}
            if started_ms[stack.name]:
                figures["started_minus_created"] = summarize_ms(started_ms[stack.name])
            stack.figures["idle"] = figures


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


def e2e_round(stack: Stack, jobs: int, timeout_s: float) -> dict[str, Any]:
    """``jobs`` submitted at c16 while the worker runs; first submit to last finish."""
    began = time.time()
    load = loadgen.submit_load(
        stack.base + "/jobs", JOB_BODY, jobs, 16, timeout_s, collect_ids=True
    )
    ids = load.pop("ids")
    succeeded, failed, unfinished = wait_done(stack.system, ids, timeout_s)
    seen = time.time()
    finish_times = stack.system.finish_times(ids)
    result = {
        "jobs": len(ids),
        "succeeded": succeeded,
        "failed": failed,
        "unfinished": unfinished,
        "seconds": (max(finish_times) if finish_times else seen) - began,
        "client_seconds": seen - began,
        "submit": load,
    }
    if unfinished:
        raise PhaseIncomplete(f"{unfinished} of {len(ids)} jobs not finished", result)
    return result


def e2e_phase(stacks: list[Stack], shares: list[int], timeout_s: float, recorder: Recorder) -> None:
    """End to end in alternating rounds; jobs/s over the summed round times."""
    rounds: dict[str, list[dict[str, Any]]] = {stack.name: [] for stack in stacks}
    for index, stack in alternate(stacks, len(shares)):
        outcome = recorder.attempt(
            f"{stack.name} e2e round {index + 1}",
            partial(e2e_round, stack, shares[index], timeout_s),
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
        stack.figures["e2e"] = {
            "jobs": sum(r["jobs"] for r in done),
            "succeeded": sum(r["succeeded"] for r in done),
            "failed": sum(r["failed"] for r in done),
            "unfinished": sum(r["unfinished"] for r in done),
            "seconds": seconds,
            "per_s": rate(finished, seconds),
            "per_s_each": [rate(r["succeeded"] + r["failed"], r["seconds"]) for r in done],
            "submit": {k: v for k, v in submit.items() if k != "histogram_us"},
        }
        recorder.check(f"{stack.name} e2e submit", submit)


def workflow_body(fan: int = WORKFLOW_FAN) -> dict[str, Any]:
    """1 -> fan -> 1: numbers, one echo per number, their sum."""
    return {
        "steps": [
            {"id": "numbers", "type": "diagnostics.echo", "payload": {"data": list(range(fan))}},
            {
                "id": "fan",
                "type": "diagnostics.echo",
                "depends_on": ["numbers"],
                "map": {"$result": "numbers", "path": "data"},
                "payload": {"data": {"$item": ""}},
            },
            {
                "id": "sum",
                "type": "diagnostics.sum",
                "depends_on": ["fan"],
                "payload": {"values": {"$result": "fan", "path": "*.data"}},
            },
        ]
    }


def workflow_round(system: Taskplane, timeout_s: float) -> dict[str, Any]:
    """One workflow: start() to the finished_at its last step recorded."""
    from tasks.core.workflow_spec import check_workflow
    from tasks.core.workflows import start, step_job_id

    app = system.app
    workflow = check_workflow(app, workflow_body())
    began = time.time()
    workflow_id = start(app, workflow)
    deadline = time.monotonic() + timeout_s
    state, finished = system.workflow_state(workflow_id)
    while state == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
        state, finished = system.workflow_state(workflow_id)
    if state != "succeeded" or finished is None:
        raise RuntimeError(f"workflow {workflow_id} is {state} after {timeout_s:.0f}s")
    total = (app.jobstore.get(step_job_id(workflow_id, "sum")) or {}).get("result")
    expected = {"sum": sum(range(WORKFLOW_FAN)), "count": WORKFLOW_FAN}
    if total != expected:
        raise RuntimeError(f"workflow {workflow_id}: fan-in {total}, not {expected}")
    seconds = finished - began
    return {"steps": WORKFLOW_STEPS, "seconds": seconds, "per_s": rate(WORKFLOW_STEPS, seconds)}


def plain_round(system: Taskplane, timeout_s: float) -> dict[str, Any]:
    """The workflow's number of plain echo jobs, one batch submit, to the last finish."""
    from tasks.core.submission import check, submit

    app = system.app
    jobs = [check(app, JOB) for _ in range(WORKFLOW_STEPS)]
    began = time.time()
    ids = [s.record["id"] for s in submit(app, jobs)]
    succeeded, failed, unfinished = wait_done(system, ids, timeout_s)
    if unfinished or failed:
        raise RuntimeError(f"{unfinished} unfinished and {failed} failed of {len(ids)} jobs")
    seconds = max(system.finish_times(ids)) - began
    return {"jobs": len(ids), "seconds": seconds, "per_s": rate(len(ids), seconds)}


def workflow_phase(stack: Stack, rounds: int, timeout_s: float, recorder: Recorder) -> None:
    """Workflow steps/s beside plain jobs/s, same worker, taking turns (W P, P W, ...)."""
    system = stack.system
    assert isinstance(system, Taskplane)
    done: dict[str, list[dict[str, Any]]] = {"workflow": [], "plain": []}
    kinds = {"workflow": workflow_round, "plain": plain_round}
    for index in range(rounds + 1):  # round 0 warms up (imports, channels), not counted
        order = ["workflow", "plain"] if index % 2 == 0 else ["plain", "workflow"]
        for kind in order:
            outcome = recorder.attempt(
                f"{stack.name} {kind} round {index}", partial(kinds[kind], system, timeout_s)
            )
            if outcome is None:
                return
            if index:
                done[kind].append(outcome)
    steps = sum(r["steps"] for r in done["workflow"])
    jobs = sum(r["jobs"] for r in done["plain"])
    workflow_s = sum(r["seconds"] for r in done["workflow"])
    plain_s = sum(r["seconds"] for r in done["plain"])
    stack.figures["workflow"] = {
        "shape": f"1 -> {WORKFLOW_FAN} -> 1",
        "rounds": rounds,
        "steps": steps,
        "seconds": workflow_s,
        "steps_per_s": rate(steps, workflow_s),
        "steps_per_s_each": [r["per_s"] for r in done["workflow"]],
        "plain_jobs": jobs,
        "plain_seconds": plain_s,
        "plain_jobs_per_s": rate(jobs, plain_s),
        "plain_jobs_per_s_each": [r["per_s"] for r in done["plain"]],
    }


def run_systems(
    services: Services,
    jobs: int,
    timeouts: dict[str, float],
    recorder: Recorder,
    results: dict[str, Any],
    workflow_rounds: int = WORKFLOW_ROUNDS,
) -> None:
    """The baseline and Taskplane side by side, phase by phase, taking turns.

    Both webs are up from the start, so each phase can alternate between the
    systems (A B, B A, ...) and a burst of load from elsewhere on the machine
    hits both rather than one. A failing step is recorded; the rest goes on.
    Figures land in ``results[<system>]`` as they are measured.
    """
    stacks: list[Stack] = []
    for system_class in (Baseline, Taskplane):
        queue_type = "classic" if system_class is Baseline else "quorum"
        vhost, broker_url = services.vhost(system_class.name, queue_type)
        system = system_class(
            broker_url,
            services.database(),
            OUT / "logs",
            services.scratch_dir("taskplane-bench-metrics-"),
        )
        services.systems.append(system)
        stack = Stack(system, vhost, broker_url)
        results[stack.name] = stack.figures
        log(f"{stack.name}: starting the web")
        stack.base = system.start_web()
        wait_for_web_workers(system.web, int(system.platform.env["WEB_CONCURRENCY"]))
        stacks.append(stack)

    def purge() -> None:
        counts = {s.name: services.purge(s.vhost, s.broker_url) for s in stacks}
        log(f"purged {counts}")

    for stack in stacks:
        warm_up(stack.base)
    purge()
    shares = round_shares(jobs)
    log(f"submit: {jobs} requests each at concurrency 1, in {len(shares)} alternating rounds")
    submit_rounds(stacks, shares, 1, timeouts["submit"], recorder)
    purge()
    for stack in stacks:
        if isinstance(stack.system, Taskplane):
            batch_jobs = max(2 * jobs, 4 * BATCH_SIZE)
            log(f"{stack.name}: batch submit, {batch_jobs} jobs in batches of {BATCH_SIZE}")
            batch = recorder.attempt(
                f"{stack.name} batch", partial(batch_phase, stack.base, batch_jobs, 60)
            )
            if batch is not None:
                stack.figures["batch"] = batch
                recorder.check(f"{stack.name} batch", batch)
    purge()
    log(f"submit: {jobs} requests each at concurrency 16 (their jobs stay queued)")
    submit_rounds(stacks, shares, 16, timeouts["submit"], recorder, keep_ids=True)
    for stack in stacks:
        log(f"{stack.name}: starting the worker on a backlog of {len(stack.backlog)} jobs")
        if recorder.attempt(f"{stack.name} worker", stack.system.start_worker) is None:
            continue
        drain = recorder.attempt(
            f"{stack.name} drain",
            partial(drain_phase, stack.system, stack.backlog, timeouts["e2e"]),
        )
        if drain is not None:
            stack.figures["drain"] = drain
    log(f"idle latency: {IDLE_SAMPLES} jobs each, one at a time, taking turns")
    idle_phase(stacks, timeouts["idle"], recorder)
    log(f"end to end: {jobs} jobs each at concurrency 16, in {len(shares)} alternating rounds")
    e2e_phase(stacks, shares, timeouts["e2e"], recorder)
    for stack in stacks:
        web, pool = children_rss(stack.system.web), children_rss(stack.system.worker)
        stack.figures["rss_mb"] = {
            "web": web["max"],
            "worker_child": pool["max"],
            "web_each": web["each"],
            "worker_children_each": pool["each"],
        }
    for stack in stacks:  # after the RSS, so the figures above are as before
        if isinstance(stack.system, Taskplane) and stack.system.worker is not None:
            log(
                f"{stack.name}: workflows 1 -> {WORKFLOW_FAN} -> 1 beside as many plain jobs, "
                f"{workflow_rounds} rounds each, taking turns"
            )
            workflow_phase(stack, workflow_rounds, timeouts["workflow"], recorder)
    log("stopping")
    for stack in stacks:
        stack.system.stop()
        services.drop_vhost(stack.vhost)


# -- output ---------------------------------------------------------------------


def write_outputs(results: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    try:
        from bench.chart import draw

        draw(results, OUT / "bench.png")
    except Exception as exc:  # noqa: BLE001 - the table and JSON still stand
        log(f"chart not drawn: {exc}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N=500")
    parser.add_argument("--jobs", type=int, default=None, help="N (default BENCH_JOBS or 5000)")
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 500 if args.quick else int(os.environ.get("BENCH_JOBS", "5000"))
    if args.jobs < 50:
        parser.error("--jobs must be at least 50")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = args.jobs
    budget = int(os.environ.get("BENCH_TIMEOUT_S", 300 + jobs * 0.12))
    timeouts = {
        "submit": 30 + jobs / 50,  # at least ~50 req/s, or the phase stops
        "idle": 60,
        "e2e": 60 + jobs / 25,
        "ceiling": 30 + jobs / 100,
        "workflow": 30,  # per workflow (or plain round) of 102 steps
    }
    if loadgen.wrk_path() is None:
        log(
            "WARNING: wrk not found; using the Python load generator (it takes CPU from the "
            "systems under test, so submit figures are lower). Install it: apt-get install wrk"
        )

    def on_alarm(*_: Any) -> None:
        raise BenchTimeout(f"the benchmark exceeded its budget of {budget}s (BENCH_TIMEOUT_S)")

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(budget)
    shutil.rmtree(OUT / "logs", ignore_errors=True)
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    workflow_rounds = 3 if args.quick else WORKFLOW_ROUNDS
    services = Services()
    started = time.monotonic()
    results: dict[str, Any] = {
        "settings": {"jobs": jobs, "quick": args.quick, "window": WINDOW, "prefetch": PREFETCH,
                     "batch_size": BATCH_SIZE, "idle_samples": IDLE_SAMPLES,
                     "workflow_fan": WORKFLOW_FAN, "workflow_rounds": workflow_rounds},
        "errors": [],
        "warnings": [],
    }  # fmt: skip
    try:
        results["machine"] = machine_info(services)
        results["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            results["ceiling"] = run_ceiling(services, jobs, timeouts["ceiling"])
        except Exception as exc:  # noqa: BLE001
            results["errors"].append(f"ceiling: {type(exc).__name__}: {exc}")
            log(f"ceiling FAILED: {exc}")
        recorder = Recorder()
        try:
            run_systems(services, jobs, timeouts, recorder, results, workflow_rounds)
        except Exception as exc:  # noqa: BLE001
            recorder.errors.append(f"systems: {type(exc).__name__}: {exc}")
            log(f"systems FAILED: {exc}\n{traceback.format_exc()}")
        finally:
            results["errors"] += recorder.errors
            results["warnings"] += recorder.warnings
    except (KeyboardInterrupt, BenchTimeout) as exc:
        reason = str(exc) or "Ctrl-C or SIGTERM"
        results["errors"].append(f"interrupted: {reason}")
        log(f"interrupted: {reason}; cleaning up")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup runs to the end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        services.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    results["seconds"] = round(time.monotonic() - started, 1)
    targets = evaluate_targets(results)
    results["targets"] = [t.as_dict() for t in targets]
    write_outputs(results)
    print()
    print(format_table(results, targets))
    print(f"\n{results['seconds']:.0f}s; results in {OUT / 'results.json'}, chart in "
          f"{OUT / 'bench.png'}, process logs in {OUT / 'logs'}")  # fmt: skip
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
