"""``make bench``: the ceiling, two baselines and Taskplane, measured in one run.

Usage: ``bench/run.sh [--quick] [--jobs N] [--webhook-jobs W] [--backlog K]``
(or BENCH_JOBS=N). Everything runs on the local RabbitMQ and Redis over
loopback, each system in a vhost and a Redis database of its own, all removed
at the end (also on error or Ctrl-C).

The systems: the plain baseline (Flask + Celery with Celery's defaults,
bench/baseline/app.py), the guarded baseline (the same, set up by a careful
team for Taskplane's guarantees: late acks, confirms, a quorum queue, task
events, bench/baseline/guarded.py) and Taskplane, whose workers run per
worker group as its README says (``TASKPLANE_WORKER_GROUP=<group>``, the group
its config gives the job's queue: today "short" for diagnostics, the no-op
job and workflows, and "io" for webhooks; pool, concurrency and prefetch from
its config; ``BENCH_TASKPLANE_WORKER_ARGS`` and ``BENCH_TASKPLANE_WORKERS``
for experiments, see bench/systems.py).

The ceiling first (raw AMQP with pika); then the HTTP sink of the webhook job
(bench/sink.py) is started and its own ceiling measured with wrk; then the
three systems are started side by side and every phase takes turns between
them (rounds A B C, C B A, ...), so a burst of load from elsewhere on the
machine lands on all of them rather than skewing one ratio:

1. the webs up, 2 s of warm-up load each; then HTTP submit of the no-op job
   with wrk while no worker runs, so the webs have the machine (queues purged
   between steps): N requests each at concurrency 1 (-t1 -c1); Taskplane's
   ``POST /jobs/batch`` (batches of 1,000 from two clients); N requests each
   at concurrency 16 (-t2 -c16), whose jobs stay queued. Rates are over the
   summed round times, percentiles from the merged wrk latency histograms.
2. each system's worker started on its backlog of N jobs: the drain rate, from
   the first to the last finish the worker recorded (the worker alone).
3. 50 single jobs each, one at a time, taking turns (the client polls Redis
   every millisecond; Taskplane's records also give started - created).
4. end to end: wrk -t2 -c16 submits N jobs per system (in rounds), logging
   the ids it got back; each round runs from its first submit to the last
   finish the worker recorded (Taskplane's ``finished_at``, Celery's
   ``date_done``), web and worker sharing the machine.
5. RSS of the largest gunicorn worker and of the largest pool child (a threads
   pool has no children: then the worker process, labelled as such).
6. workflows on Taskplane's same worker: a 1 -> 100 -> 1 workflow (an echo of
   100 numbers, 100 echo steps mapped over them, a sum as the fan-in) started
   in-process with ``tasks.core.workflows.start``, timed from ``start()`` to
   the workflow's ``finished_at``: 102 steps / that time. Beside it, the same
   102 plain echo jobs, submitted as one batch through the submission core,
   first submit to last finish. 5 rounds (3 with --quick), one workflow at a
   time, workflow and plain taking turns (W P, P W, ...).
7. the webhook job (one POST of a small JSON body to the sink: Taskplane's
   ``webhook.deliver`` on its io group, the baselines' task posting with a
   pooled ``httpx.Client`` per worker process), W jobs per system (N/5 by
   default): the no-op workers stopped, W submits at c16 kept queued, each
   system's webhook worker started on them (drain, as in 2), then end to end
   at c16 (as in 4), then the webhook workers' RSS; the sink's request count
   is checked against the jobs.
8. backlog growth, Taskplane only (bench/backlog.py): submit c16 and
   ``GET /jobs/<id>`` c16 over N jobs with no worker running, then the drain
   rate over N; with an empty queue, with K jobs waiting in the same queue
   (100,000; 10,000 with --quick; filled through the batch endpoint; the
   drain over the first N finishes of the backlog), and empty again, the two
   empty rounds merged. Memory per job on the way: Redis per queued and per
   finished job record, RabbitMQ's quorum queue and node per waiting message.
9. waiters, Taskplane only (bench/waiters.py): submit c16 over N jobs, no
   worker running, with no request waiting, then with 300 ``GET
   /jobs/<id>?wait_s=30`` waiting on a queued job, then none again; the web's
   RSS each time and how many waiters got a wait slot.
10. job memory, Taskplane only (bench/job_memory.py): Redis per finished job,
   record and search indexes apart, with 100,000 jobs (10,000 with --quick)
   made by the job store's own scripts, with two tags each and without.

Results: the table on stdout, bench/out/results.json and bench/out/bench.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as py_platform
import re
import shutil
import signal
import sys
import time
import traceback
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import backlog as backlog_growth
from bench import ceiling, job_memory, loadgen, waiters
from bench.harness import (
    BATCH_SIZE,
    JSON_HEADERS,
    BenchTimeout,
    Recorder,
    Services,
    Stack,
    alternate,
    batch_phase,
    drain_each,
    e2e_phase,
    log,
    round_shares,
    submit_rounds,
    wait_done,
)
from bench.report import evaluate_targets, format_table, rate, summarize_ms
from bench.systems import (
    NOOP,
    WEBHOOK,
    Baseline,
    Guarded,
    System,
    Taskplane,
    children_rss,
    wait_for_web_workers,
    worker_args,
    worker_count,
    workers_rss,
)
from tests.services import ROOT, VENV_BIN, Process, free_port, wait_until

OUT = ROOT / "bench" / "out"
JOB = {"type": "diagnostics.echo", "payload": {}}
WEBHOOK_BODY = {"event": "job.finished", "job": 42, "tags": ["bench"], "ok": True}
WINDOW = 1000  # outstanding confirms in the ceiling's windowed publisher
PREFETCH = 100  # the ceiling consumer's prefetch
IDLE_SAMPLES = 50
IDLE_GAP_S = 0.05  # pause between idle samples, so each one meets an idle system
POLL_S = 0.001  # how often the idle phase polls Redis
WARMUP_S = 2
WEBHOOK_WARMUP = 20  # webhook submits in the warm-up
NO_SINK = "http://127.0.0.1:9"  # the webhook URL when the sink did not start (no webhook phase)
WORKFLOW_FAN = 100  # the workflow phase: 1 -> WORKFLOW_FAN -> 1
WORKFLOW_STEPS = WORKFLOW_FAN + 2
WORKFLOW_ROUNDS = 5  # 3 with --quick
SYSTEMS: tuple[type[System], ...] = (Baseline, Guarded, Taskplane)
QUEUE_TYPES = {"baseline": "classic", "guarded": "quorum", "taskplane": "quorum"}
_BANNER = re.compile(r"concurrency:\s*(.+?)\s*$", re.MULTILINE)


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


def warm_up(stack: Stack, recorder: Recorder) -> None:
    """WARMUP_S of no-op submits and a few webhook submits (the first use of a queue),
    purged before anything is measured; a refused warm-up request is a warning."""
    path, body = stack.requests[NOOP]
    recorder.check(
        f"{stack.name} warm-up", loadgen.submit_load(stack.base + path, body, 0, 16, WARMUP_S)
    )
    path, body = stack.requests[WEBHOOK]
    recorder.check(
        f"{stack.name} webhook warm-up",
        loadgen.submit_load(stack.base + path, body, WEBHOOK_WARMUP, 4, 30),
    )


# -- the webhook job's HTTP sink ------------------------------------------------------


def start_sink(services: Services) -> str:
    """bench/sink.py in a process of its own; its base URL once it answers."""
    port = free_port()
    argv = [str(VENV_BIN / "python"), "-m", "bench.sink", "--port", str(port)]
    process = Process("sink", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, OUT / "logs")
    services.processes.append(process)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not process.alive():
            raise RuntimeError(f"the sink exited early:\n{process.log_tail()}")
        return httpx.get(base + "/count", timeout=1).status_code == 200

    wait_until(answers, 30, what="the HTTP sink to answer")
    return base


def sink_count(base: str) -> int:
    """POSTs the sink answered so far (its own count)."""
    return int(httpx.get(base + "/count", timeout=5).json()["requests"])


def sink_ceiling(base: str, jobs: int, timeout_s: float, recorder: Recorder) -> dict[str, Any]:
    """What the sink takes at c16 from wrk: keep-alive, and a new connection per request
    (as each webhook job's ``httpx.post`` opens one)."""
    body = json.dumps(WEBHOOK_BODY)
    figures = {}
    for key, close in (("keepalive_c16", False), ("close_c16", True)):
        run = loadgen.submit_load(base + "/hook", body, jobs, 16, timeout_s, close=close)
        run.pop("histogram_us", None)
        recorder.check(f"sink {key}", run)
        figures[key] = run
    return figures


def _one_idle_job(stack: Stack, client: httpx.Client, deadline: float) -> tuple[float, str]:
    """Submit one job and poll Redis until it is done; (submit -> done in ms, job id)."""
    path, body = stack.requests[NOOP]
    began = time.perf_counter()
    answer = client.post(path, content=body, headers=JSON_HEADERS)
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


# -- the systems, phase by phase ---------------------------------------------------------


def start_stacks(services: Services, sink_base: str, results: dict[str, Any]) -> list[Stack]:
    """Every system's web up (its workers come later), each in its vhost and database."""
    stacks: list[Stack] = []
    for system_class in SYSTEMS:
        vhost, broker_url = services.vhost(system_class.name, QUEUE_TYPES[system_class.name])
        system = system_class(
            broker_url,
            services.database(),
            OUT / "logs",
            services.scratch_dir("taskplane-bench-metrics-"),
        )
        services.systems.append(system)
        stack = Stack(system, vhost, broker_url)
        stack.requests = {
            NOOP: system.noop_request(),
            WEBHOOK: system.webhook_request(sink_base + "/hook", WEBHOOK_BODY),
        }
        results[stack.name] = stack.figures
        log(f"{stack.name}: starting the web")
        stack.base = system.start_web()
        wait_for_web_workers(system.web, int(system.platform.env["WEB_CONCURRENCY"]))
        stacks.append(stack)
    return stacks


def purge_all(services: Services, stacks: list[Stack]) -> None:
    counts = {s.name: services.purge(s.vhost, s.broker_url) for s in stacks}
    log(f"purged {counts}")


def banner(process: Process) -> str | None:
    """The pool a Celery worker says it runs, from its start-up banner: "2 (prefork)"."""
    match = _BANNER.search(process.log_path.read_text(errors="replace"))
    return match.group(1) if match else None


def record_banners(stack: Stack, kind: str) -> None:
    """Taskplane's workers: what pool and concurrency its group config gave them."""
    if isinstance(stack.system, Taskplane) and stack.system.workers.get(kind):
        said = {banner(p) for p in stack.system.workers[kind]}
        stack.figures.setdefault("workers", {})[kind] = ", ".join(sorted(s or "?" for s in said))


def rss_figures(system: System, kind: str) -> dict[str, Any]:
    web = children_rss(system.web)
    return {"web": web["max"], "web_each": web["each"], **workers_rss(system.workers.get(kind, []))}


def noop_phases(
    services: Services,
    stacks: list[Stack],
    jobs: int,
    timeouts: dict[str, float],
    recorder: Recorder,
) -> None:
    """Phases 1-5 with the no-op job: submit c1, batch, submit c16, drain, idle, end to end,
    RSS. The no-op workers are left running."""
    for stack in stacks:
        recorder.attempt(f"{stack.name} warm-up", partial(warm_up, stack, recorder))
    purge_all(services, stacks)
    shares = round_shares(jobs)
    log(f"submit: {jobs} requests each at concurrency 1, in {len(shares)} alternating rounds")
    submit_rounds(stacks, shares, 1, timeouts["submit"], recorder)
    purge_all(services, stacks)
    for stack in stacks:
        if isinstance(stack.system, Taskplane):
            batch_jobs = max(2 * jobs, 4 * BATCH_SIZE)
            log(f"{stack.name}: batch submit, {batch_jobs} jobs in batches of {BATCH_SIZE}")
            batch = recorder.attempt(
                f"{stack.name} batch", partial(batch_phase, stack.base, JOB, batch_jobs, 60)
            )
            if batch is not None:
                stack.figures["batch"] = batch
                recorder.check(f"{stack.name} batch", batch)
    purge_all(services, stacks)
    log(f"submit: {jobs} requests each at concurrency 16 (their jobs stay queued)")
    for stack in stacks:
        stack.backlog = []
    submit_rounds(stacks, shares, 16, timeouts["submit"], recorder, keep_ids=True)
    drain_each(stacks, NOOP, timeouts["e2e"], recorder)
    for stack in stacks:
        record_banners(stack, NOOP)
    log(f"idle latency: {IDLE_SAMPLES} jobs each, one at a time, taking turns")
    idle_phase(stacks, timeouts["idle"], recorder)
    log(f"end to end: {jobs} jobs each at concurrency 16, in {len(shares)} alternating rounds")
    e2e_phase(stacks, shares, timeouts["e2e"], recorder)
    for stack in stacks:
        stack.figures["rss_mb"] = rss_figures(stack.system, NOOP)


def webhook_phases(
    services: Services,
    stacks: list[Stack],
    jobs: int,
    timeouts: dict[str, float],
    recorder: Recorder,
    sink: dict[str, Any],
) -> None:
    """Phase 7: the webhook job, drain and end to end, on each system's webhook workers."""
    for stack in stacks:
        stack.system.stop_workers(NOOP)
        stack.backlog = []
    purge_all(services, stacks)
    before = sink_count(sink["base"])
    shares = round_shares(jobs)
    log(f"webhook: {jobs} submits each at concurrency 16 (kept queued, no worker running)")
    submit_rounds(stacks, shares, 16, timeouts["submit"], recorder, keep_ids=True, kind=WEBHOOK)
    drain_each(stacks, WEBHOOK, timeouts["webhook"], recorder)
    for stack in stacks:
        record_banners(stack, WEBHOOK)
    log(f"webhook end to end: {jobs} jobs each at concurrency 16, in {len(shares)} rounds")
    e2e_phase(stacks, shares, timeouts["webhook"], recorder, kind=WEBHOOK)
    for stack in stacks:
        stack.section(WEBHOOK)["rss_mb"] = workers_rss(stack.system.workers.get(WEBHOOK, []))
        stack.system.stop_workers(WEBHOOK)
    finished = sum(
        (stack.section(WEBHOOK).get(step) or {}).get(key, 0)
        for stack in stacks
        for step in ("drain", "e2e")
        for key in ("succeeded", "failed")
    )
    sink["job_requests"] = sink_count(sink["base"]) - before
    sink["jobs_finished"] = finished
    if sink["job_requests"] < finished:
        recorder.warn("sink", f"{sink['job_requests']} POSTs for {finished} finished webhook jobs")


def run_systems(
    services: Services,
    options: argparse.Namespace,
    timeouts: dict[str, float],
    recorder: Recorder,
    results: dict[str, Any],
) -> None:
    """The baselines and Taskplane side by side, phase by phase, taking turns.

    All webs are up from the start, so each phase can alternate between the
    systems (A B C, C B A, ...) and a burst of load from elsewhere on the
    machine hits all of them rather than one. A failing step is recorded; the
    rest goes on. Figures land in ``results[<system>]`` as they are measured.
    """
    log("sink: starting the webhook job's HTTP sink and measuring its ceiling")
    sink: dict[str, Any] = {"base": recorder.attempt("sink", partial(start_sink, services))}
    results["sink"] = sink
    if sink["base"]:
        sink["ceiling"] = recorder.attempt(
            "sink ceiling",
            partial(sink_ceiling, sink["base"], options.jobs, timeouts["submit"], recorder),
        )
    stacks = start_stacks(services, sink["base"] or NO_SINK, results)
    taskplane = next(s for s in stacks if isinstance(s.system, Taskplane))
    assert isinstance(taskplane.system, Taskplane)
    results["settings"]["taskplane_worker_groups"] = dict(
        taskplane.system.app.conf.taskplane_worker_groups
    )
    results["settings"]["taskplane_groups"] = {
        kind: taskplane.system.group(kind) for kind in (NOOP, WEBHOOK)
    }
    noop_phases(services, stacks, options.jobs, timeouts, recorder)
    if taskplane.system.workers.get(NOOP):
        log(
            f"{taskplane.name}: workflows 1 -> {WORKFLOW_FAN} -> 1 beside as many plain jobs, "
            f"{options.workflow_rounds} rounds each, taking turns"
        )
        workflow_phase(taskplane, options.workflow_rounds, timeouts["workflow"], recorder)
    if sink["base"]:
        recorder.attempt(
            "webhook",
            partial(
                webhook_phases, services, stacks, options.webhook_jobs, timeouts, recorder, sink
            ),
        )
    log(f"backlog growth: Taskplane with an empty queue, then {options.backlog:,} jobs waiting")
    recorder.attempt(
        "taskplane backlog",
        partial(
            backlog_growth.backlog_phase,
            services,
            taskplane,
            options.jobs,
            options.backlog,
            timeouts,
            recorder,
        ),
    )
    log(f"waiters: Taskplane submit c16 with none and {waiters.WAITERS} requests waiting on a job")
    recorder.attempt(
        "taskplane waiters",
        partial(waiters.waiters_phase, services, taskplane, options.jobs, timeouts, recorder),
    )
    jobs = job_memory.QUICK_JOBS if options.quick else job_memory.JOBS
    log(f"job memory: Redis per finished job with {jobs:,} jobs (record and indexes)")
    recorder.attempt(
        "taskplane job memory",
        partial(
            job_memory.job_memory_phase,
            services,
            jobs,
            results.setdefault("taskplane", {}).setdefault("job_memory", {}),
        ),
    )
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
    parser.add_argument("--quick", action="store_true", help="smoke run: N=500, K=10,000")
    parser.add_argument("--jobs", type=int, default=None, help="N (default BENCH_JOBS or 5000)")
    parser.add_argument(
        "--webhook-jobs", type=int, default=None, help="W, webhook jobs per phase (default N/5)"
    )
    parser.add_argument(
        "--backlog", type=int, default=None, help="K, jobs waiting (100,000; 10,000 with --quick)"
    )
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 500 if args.quick else int(os.environ.get("BENCH_JOBS", "5000"))
    if args.jobs < 50:
        parser.error("--jobs must be at least 50")
    if args.webhook_jobs is None:
        args.webhook_jobs = max(50, args.jobs // 5)
    if args.webhook_jobs < 20:
        parser.error("--webhook-jobs must be at least 20")
    if args.backlog is None:
        args.backlog = backlog_growth.QUICK_BACKLOG if args.quick else backlog_growth.BACKLOG
    if args.backlog < 2 * BATCH_SIZE or args.backlog < args.jobs + 2 * BATCH_SIZE:
        parser.error(f"--backlog must be at least N + {2 * BATCH_SIZE} (and {2 * BATCH_SIZE})")
    args.workflow_rounds = 3 if args.quick else WORKFLOW_ROUNDS
    return args


def time_limits(args: argparse.Namespace) -> tuple[int, dict[str, float]]:
    """The whole run's budget (BENCH_TIMEOUT_S overrides it) and each phase's bound."""
    jobs, webhooks, backlog = args.jobs, args.webhook_jobs, args.backlog
    default = 300 + jobs * 0.12 + webhooks * 0.6 + backlog * 0.003
    budget = int(os.environ.get("BENCH_TIMEOUT_S", default))
    timeouts = {
        "submit": 30 + jobs / 50,  # at least ~50 req/s, or the phase stops
        "idle": 60,
        "e2e": 60 + jobs / 25,
        "ceiling": 30 + jobs / 100,
        "workflow": 30,  # per workflow (or plain round) of 102 steps
        "webhook": 60 + webhooks / 5,  # webhook drain and end to end
        "fill": 60 + backlog / 500,  # the backlog, through POST /jobs/batch
    }
    return budget, timeouts


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "jobs": args.jobs,
        "quick": args.quick,
        "window": WINDOW,
        "prefetch": PREFETCH,
        "batch_size": BATCH_SIZE,
        "idle_samples": IDLE_SAMPLES,
        "workflow_fan": WORKFLOW_FAN,
        "workflow_rounds": args.workflow_rounds,
        "webhook_jobs": args.webhook_jobs,
        "webhook_body": WEBHOOK_BODY,
        "backlog": args.backlog,
        "taskplane_workers": worker_count(),  # BENCH_TASKPLANE_WORKERS
        "taskplane_worker_args": worker_args(),  # BENCH_TASKPLANE_WORKER_ARGS
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget, timeouts = time_limits(args)
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
    services = Services()
    started = time.monotonic()
    results: dict[str, Any] = {"settings": settings_of(args), "errors": [], "warnings": []}
    try:
        results["machine"] = machine_info(services)
        results["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            results["ceiling"] = run_ceiling(services, args.jobs, timeouts["ceiling"])
        except Exception as exc:  # noqa: BLE001
            results["errors"].append(f"ceiling: {type(exc).__name__}: {exc}")
            log(f"ceiling FAILED: {exc}")
        recorder = Recorder()
        try:
            run_systems(services, args, timeouts, recorder, results)
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
