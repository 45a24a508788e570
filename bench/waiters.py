"""Submissions while requests wait for jobs (``GET /jobs/<id>?wait_s=N``), Taskplane only.

The question: do a few hundred waiting requests starve submissions? Each
waiting request holds a gunicorn thread; a process lets
``taskplane_wait_slots`` of them wait (gunicorn.conf.py gives it that many
threads on top of WEB_THREADS) and answers the others at once
(``Taskplane-Wait: unavailable``). Measured: submit at c16 (wrk, N requests,
no worker running) with no waiter, then with W waiters (300; each a
connection of its own waiting up to 30 s on a job that stays queued), then
with none again (the two merged), the web's largest worker RSS each time, and
how many waiters got a slot. The job is cancelled at the end of each loaded
round, which answers every waiter still waiting (it shows the wake-up too).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import httpx

from bench import loadgen
from bench.harness import JSON_HEADERS, Recorder, Services, Stack, log
from bench.report import merge_backlog_rounds, strip_histograms
from bench.systems import NOOP, Taskplane, children, children_rss

WAITERS = 300
WAIT_S = 30
SETTLE_S = 1.0  # for every waiter to be waiting (or answered) before the load starts


def broker_connections(stack: Stack) -> int | None:
    """AMQP connections the web's workers hold (each thread that published keeps a lane)."""
    web = stack.system.web
    if web is None:
        return None
    inodes = set()
    for pid in children(web.pid):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    port = f"{5672:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[2].endswith(":" + port) and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


class Waiters:
    """``count`` threads, each a connection waiting on ``job_id`` with wait_s."""

    def __init__(self, base: str, job_id: str, count: int) -> None:
        self.url = f"{base}/jobs/{job_id}?wait_s={WAIT_S}"
        self.answers: list[tuple[float, str, int]] = []  # (answered at, header, status)
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._wait, daemon=True) for _ in range(count)]

    def _wait(self) -> None:
        try:
            response = httpx.get(self.url, timeout=WAIT_S + 10)
            answer = (
                time.monotonic(),
                response.headers.get("Taskplane-Wait", "?"),
                response.status_code,
            )
        except httpx.HTTPError as exc:
            answer = (time.monotonic(), type(exc).__name__, 0)
        with self._lock:
            self.answers.append(answer)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def counts(self, before: float | None = None) -> dict[str, int]:
        with self._lock:
            return dict(
                Counter(header for at, header, _ in self.answers if before is None or at < before)
            )


def _round(stack: Stack, jobs: int, waiters: int, timeout_s: float, recorder: Recorder) -> dict:
    path, body = stack.requests[NOOP]
    figures: dict[str, Any] = {"waiters": waiters}
    group = None
    if waiters:
        response = httpx.post(stack.base + path, content=body, headers=JSON_HEADERS, timeout=10)
        response.raise_for_status()
        job_id = response.json()["id"]  # stays queued: no worker runs now
        group = Waiters(stack.base, job_id, waiters)
        group.start()
        time.sleep(SETTLE_S)
        figures["answered_at_once"] = group.counts()
    figures["rss_mb_before"] = children_rss(stack.system.web)
    submit = loadgen.submit_load(stack.base + path, body, jobs, 16, timeout_s)
    recorder.check(f"taskplane waiters={waiters} submit_c16", submit)
    figures["submit_c16"] = submit
    figures["rss_mb"] = children_rss(stack.system.web)
    figures["broker_connections"] = broker_connections(stack)
    if group is not None:
        loaded_until = time.monotonic()
        figures["answered_during_load"] = group.counts(loaded_until)
        cancelled_at = time.monotonic()
        httpx.post(f"{stack.base}/jobs/{job_id}/cancel", timeout=10)
        group.join(WAIT_S + 15)
        after = sorted(at - cancelled_at for at, header, _ in group.answers if at >= loaded_until)
        figures["answers"] = group.counts()
        figures["woken_by_cancel"] = len(after)
        figures["woken_max_ms"] = round(after[-1] * 1000, 1) if after else None
    return figures


def waiters_phase(
    services: Services, stack: Stack, jobs: int, timeouts: dict[str, float], recorder: Recorder
) -> None:
    """Submit c16 with 0, WAITERS, 0 requests waiting; figures in ``stack.figures["waiters"]``."""
    system = stack.system
    assert isinstance(system, Taskplane)
    system.stop_workers(NOOP)
    services.purge(stack.vhost, stack.broker_url)
    figures = stack.figures.setdefault("waiters", {})
    figures["count"] = WAITERS
    figures["slots_per_process"] = int(system.app.conf.taskplane_wait_slots)
    rounds: dict[str, list[dict[str, Any]]] = {"none": [], "loaded": []}
    try:
        for label, count in (("none", 0), ("loaded", WAITERS), ("none", 0)):
            log(f"waiters: {jobs} submits at c16 with {count} requests waiting on a job")
            rounds[label].append(_round(stack, jobs, count, timeouts["submit"], recorder))
            services.purge(stack.vhost, stack.broker_url)
    finally:
        for label, done in rounds.items():
            if done:
                figures[label] = strip_histograms(
                    merge_backlog_rounds([{"submit_c16": r["submit_c16"]} for r in done])
                )
                figures[f"{label}_rounds"] = strip_histograms(done)
        loaded = (rounds["loaded"] or [{}])[0]
        figures["answers"] = loaded.get("answers")
        figures["answered_during_load"] = loaded.get("answered_during_load")
        figures["woken_max_ms"] = loaded.get("woken_max_ms")
        figures["rss_mb"] = {
            "none": max((r["rss_mb"]["max"] or 0) for r in rounds["none"])
            if rounds["none"]
            else None,
            "loaded": loaded.get("rss_mb", {}).get("max"),
        }


def main(argv: list[str] | None = None) -> int:
    """This phase alone: ``.venv/bin/python -m bench.waiters [--jobs N]`` (N=2000)."""
    import argparse
    import json

    from bench.report import format_value
    from bench.run import OUT, QUEUE_TYPES, WEBHOOK_BODY
    from bench.systems import WEBHOOK, wait_for_web_workers

    parser = argparse.ArgumentParser(prog="python -m bench.waiters")
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args(argv)
    services = Services()
    recorder = Recorder()
    try:
        vhost, broker_url = services.vhost(Taskplane.name, QUEUE_TYPES[Taskplane.name])
        system = Taskplane(
            broker_url,
            services.database(),
            OUT / "logs",
            services.scratch_dir("taskplane-bench-metrics-"),
        )
        services.systems.append(system)
        stack = Stack(system, vhost, broker_url)
        stack.requests = {
            NOOP: system.noop_request(),
            WEBHOOK: system.webhook_request("http://127.0.0.1:9/hook", WEBHOOK_BODY),
        }
        stack.base = system.start_web()
        wait_for_web_workers(system.web, int(system.platform.env["WEB_CONCURRENCY"]))
        loadgen.submit_load(
            stack.base + stack.requests[NOOP][0], stack.requests[NOOP][1], 500, 16, 60
        )  # fmt: skip - warm-up
        timeouts = {"submit": 30 + args.jobs / 50}
        waiters_phase(services, stack, args.jobs, timeouts, recorder)
        system.stop()
    finally:
        services.cleanup()
    from bench.report import waiters_section

    figures = stack.figures["waiters"]
    print(json.dumps(strip_histograms(figures), indent=1, default=str))
    print("\n".join(waiters_section(figures)))
    print("errors:", recorder.errors or "none", format_value(len(recorder.warnings)), "warnings")
    return 1 if recorder.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
