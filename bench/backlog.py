"""Backlog growth and memory per job: Taskplane with an empty queue and with a big one.

The question: does a queue holding 100,000 waiting jobs (10,000 with
--quick) slow down what users do meanwhile? The same three figures are
measured twice on Taskplane's no-op job, first with an empty queue, then
with the backlog waiting in the same queue (``empty`` and ``full`` in results.json):

(a) submit at c16 (wrk, N requests) while no worker runs;
(b) ``GET /jobs/<id>`` at c16 for the N jobs (a) created (bench/get.lua), still
    no worker running;
(c) the drain rate: the workers started, first to N-th finish (empty: the N
    jobs of (a); backlog: the first N of the backlog), then stopped.

The rounds run empty, full, empty (the two empty ones merged), so a drift in
the machine's load lands on both sides. The backlog is submitted through
``POST /jobs/batch`` from two clients, purged after its round. Along
the way the memory each job costs is read: Redis (``INFO memory``
``used_memory`` deltas over the records, and ``MEMORY USAGE`` of a sample of
them) for a queued and a finished job, and RabbitMQ (the quorum queue's
``memory`` and the node's ``mem_used`` from the management API) per waiting
message. ``used_memory`` and the node's memory are server-wide: other
databases and vhosts on the same servers can move them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote

from bench import loadgen
from bench.harness import (
    BATCH_SIZE,
    PhaseIncomplete,
    Recorder,
    Services,
    Stack,
    batch_phase,
    log,
)
from bench.report import backlog_ratios, merge_backlog_rounds, per_job, rate, strip_histograms
from bench.systems import NOOP, Taskplane

BACKLOG = 100_000  # jobs waiting in a full run
QUICK_BACKLOG = 10_000
SAMPLE = 200  # job records whose MEMORY USAGE is read
STATS_TIMEOUT_S = 30  # the management API's figures refresh every ~5 s
POLL_S = 1.0  # how often a drain checks for the finishes it waits for (Redis has 2 cores too)


# -- memory readings -------------------------------------------------------------------


def redis_memory(stack: Stack) -> dict[str, int]:
    """The Redis server's ``used_memory`` and the keys in this system's database."""
    client = stack.system.redis
    return {"used_memory": int(client.info("memory")["used_memory"]), "keys": client.dbsize()}


def rabbitmq_memory(services: Services, stack: Stack, until: Callable[[int], bool]) -> dict:
    """The job queue's messages and memory and the nodes' memory, once the management
    API's (periodic) figures show ``until(messages)``."""
    queue = stack.system.queues[NOOP]
    path = f"/queues/{quote(stack.vhost, safe='')}/{quote(queue, safe='')}"
    deadline = time.monotonic() + STATS_TIMEOUT_S
    with services.rabbitmq.management as api:
        while True:
            figures = api.get(path).json()
            messages = int(figures.get("messages") or 0)
            if until(messages) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        nodes = api.get("/nodes").json()
    return {
        "messages": messages,
        "queue_memory": figures.get("memory"),
        "node_mem_used": sum(int(n.get("mem_used") or 0) for n in nodes),
        "settled": until(messages),
    }


def record_sample(system: Taskplane, ids: list[str]) -> float | None:
    """The mean ``MEMORY USAGE`` of up to SAMPLE job records."""
    sizes = system.record_bytes(random.sample(ids, min(SAMPLE, len(ids))))
    return sum(sizes) / len(sizes) if sizes else None


def redis_per_job(
    before: dict[str, int], after: dict[str, int], jobs: int, sample: float | None
) -> dict[str, Any]:
    return {
        "jobs": jobs,
        "used_memory_delta": after["used_memory"] - before["used_memory"],
        "bytes_per_job": per_job(before["used_memory"], after["used_memory"], jobs),
        "keys_per_job": per_job(before["keys"], after["keys"], jobs),
        "record_bytes_sampled": sample,
    }


def rabbitmq_per_job(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    waiting = after["messages"] - before["messages"]
    return {
        "messages": waiting,
        "queue_bytes_per_job": per_job(before["queue_memory"], after["queue_memory"], waiting),
        "node_bytes_per_job": per_job(before["node_mem_used"], after["node_mem_used"], waiting),
        "before": before,
        "after": after,
    }


# -- the three figures ----------------------------------------------------------------


def queued_figures(
    stack: Stack, jobs: int, timeout_s: float, recorder: Recorder, label: str
) -> tuple[dict[str, Any], list[str]]:
    """(a) and (b): N submits at c16, then N reads of the jobs they made; no worker runs."""
    path, body = stack.requests[NOOP]
    submit = loadgen.submit_load(stack.base + path, body, jobs, 16, timeout_s, collect_ids=True)
    ids = submit.pop("ids")
    recorder.check(f"taskplane backlog {label} submit_c16", submit)
    if not ids:
        raise RuntimeError(f"backlog {label}: no job accepted")
    read = loadgen.get_load(stack.base, "/jobs/", ids, jobs, 16, timeout_s)
    recorder.check(f"taskplane backlog {label} get_c16", read)
    return {"submit_c16": submit, "get_c16": read}, ids


def first_finishes(
    system: Taskplane, candidates: list[str], count: int, timeout_s: float
) -> dict[str, Any]:
    """The drain rate over the first ``count`` finishes among ``candidates``, from the
    finish times the workers recorded.

    With the backlog, ``candidates`` are the ids at the head of the queue with
    some to spare (two clients' batches interleave, so queue order is only
    roughly answer order); with an empty queue, all of its jobs. Both drains
    poll Redis the same way, once a second, so the polling costs both the same.
    """
    finished: dict[str, bool] = {}
    remaining = set(candidates)
    deadline = time.monotonic() + timeout_s
    while len(finished) < count and time.monotonic() < deadline:
        got = system.done(list(remaining))
        finished.update(got)
        remaining.difference_update(got)
        if len(finished) < count:
            time.sleep(POLL_S)
    times = sorted(system.finish_times(list(finished)))[:count]
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    result = {
        "jobs": count,
        "finished": len(times),
        "failed": sum(1 for ok in finished.values() if not ok),
        "seconds": seconds,
        "per_s": rate(len(times) - 1, seconds),
    }
    if len(times) < count:
        raise PhaseIncomplete(f"only {len(times)} of the first {count} jobs finished", result)
    return result


def with_workers(stack: Stack, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()`` with the no-op workers running; stopped afterwards whatever happened."""
    stack.system.start_workers(NOOP)
    try:
        return measure()
    finally:
        stack.system.stop_workers(NOOP)


# -- the phase -------------------------------------------------------------------------


def backlog_phase(
    services: Services,
    stack: Stack,
    jobs: int,
    backlog: int,
    timeouts: dict[str, float],
    recorder: Recorder,
) -> None:
    """(a), (b), (c) with an empty queue, with BACKLOG jobs waiting, then empty again.

    The two empty rounds bracket the full one in time (E F E), so a drift in
    the machine's load between them moves both sides of the ratio. Figures go
    to ``stack.figures["backlog"]`` (``empty``: both empty rounds merged,
    ``full``, ``rounds`` one by one) and ``["memory"]`` as they are measured,
    so a failing step keeps what came before it.
    """
    system = stack.system
    assert isinstance(system, Taskplane)
    figures: dict[str, Any] = stack.figures.setdefault("backlog", {"jobs": jobs})
    memory: dict[str, Any] = stack.figures.setdefault("memory", {"redis": {}})
    rounds: dict[str, list[dict[str, Any]]] = {"empty": [], "full": []}
    system.stop_workers(NOOP)
    services.purge(stack.vhost, stack.broker_url)
    try:
        log(f"backlog: empty queue, {jobs} submits and reads at c16, then the drain")
        rounds["empty"].append(_empty_round(services, stack, jobs, timeouts, recorder, memory))
        log(f"backlog: filling the queue with {backlog:,} jobs through POST /jobs/batch")
        backlog_ids = _fill(services, stack, backlog, timeouts, recorder, figures, memory)
        log(f"backlog: {len(backlog_ids):,} waiting, {jobs} submits and reads at c16, the drain")
        full, _ = queued_figures(stack, jobs, timeouts["submit"], recorder, "full")
        rounds["full"].append(full)
        candidates = backlog_ids[: jobs + 2 * BATCH_SIZE]
        full["drain"] = with_workers(
            stack, partial(first_finishes, system, candidates, jobs, timeouts["e2e"])
        )
        log(f"backlog: purged {services.purge(stack.vhost, stack.broker_url):,}; empty again")
        rounds["empty"].append(_empty_round(services, stack, jobs, timeouts, recorder))
    finally:
        for side, done in rounds.items():
            if done:
                figures[side] = merge_backlog_rounds(done)
        figures["rounds"] = strip_histograms(rounds)
        figures["ratio"] = backlog_ratios(figures)
        system.stop_workers(NOOP)
        log(f"backlog: purged {services.purge(stack.vhost, stack.broker_url):,} waiting jobs")


def _empty_round(
    services: Services,
    stack: Stack,
    jobs: int,
    timeouts: dict[str, float],
    recorder: Recorder,
    memory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """(a), (b), (c) on an empty queue; with ``memory``, Redis memory of its N jobs
    queued and then finished."""
    system = stack.system
    assert isinstance(system, Taskplane)
    before = redis_memory(stack)
    empty, ids = queued_figures(stack, jobs, timeouts["submit"], recorder, "empty")
    if memory is not None:
        memory["redis"]["queued_small"] = redis_per_job(before, redis_memory(stack), len(ids), None)
    empty["drain"] = with_workers(
        stack, partial(first_finishes, system, ids, len(ids), timeouts["e2e"])
    )
    services.purge(stack.vhost, stack.broker_url)  # what a stopped worker handed back
    if memory is not None:
        memory["redis"]["finished"] = redis_per_job(
            before, redis_memory(stack), len(ids), record_sample(system, ids)
        )
    return empty


def _fill(
    services: Services,
    stack: Stack,
    backlog: int,
    timeouts: dict[str, float],
    recorder: Recorder,
    figures: dict[str, Any],
    memory: dict[str, Any],
) -> list[str]:
    """BACKLOG jobs queued; Redis and RabbitMQ memory before and after. Their ids."""
    system = stack.system
    assert isinstance(system, Taskplane)
    rabbit_before = rabbitmq_memory(services, stack, lambda messages: messages == 0)
    if not rabbit_before["settled"]:
        recorder.warn(
            "taskplane backlog memory", f"RabbitMQ showed {rabbit_before['messages']}, not 0"
        )
    redis_before = redis_memory(stack)
    job = {"type": "diagnostics.echo", "payload": {}}
    fill = batch_phase(stack.base, job, backlog - BATCH_SIZE, timeouts["fill"], collect_ids=True)
    ids = fill.pop("ids", [])
    figures["fill"] = fill
    recorder.check("taskplane backlog fill", fill)
    if not fill.get("available", True) or not ids:
        raise RuntimeError(f"backlog: POST /jobs/batch gave no jobs ({fill})")
    figures["size"] = len(ids)
    memory["redis"]["queued"] = redis_per_job(
        redis_before, redis_memory(stack), len(ids), record_sample(system, ids)
    )
    rabbit_after = rabbitmq_memory(services, stack, lambda messages: messages >= len(ids))
    if not rabbit_after["settled"]:
        recorder.warn(
            "taskplane backlog memory",
            f"RabbitMQ showed {rabbit_after['messages']} of {len(ids)} messages",
        )
    memory["rabbitmq"] = rabbitmq_per_job(rabbit_before, rabbit_after)
    return ids
