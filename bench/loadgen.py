"""HTTP load: wrk with ``bench/submit.lua`` (POST) or ``bench/get.lua`` (GET of ids),
or a Python fallback when wrk is missing.

wrk is the load generator of record: written in C, it leaves the CPU to the
systems under test on a 2-core machine. Each run sends a fixed number of
requests (each wrk thread stops after its share, see submit.lua); ``-d`` is
only the upper bound of the phase. The fallback (threads with one httpx
client each) costs far more CPU per request, so its numbers are lower and
are flagged in the report.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.report import parse_wrk, percentile

LUA_SCRIPT = Path(__file__).with_name("submit.lua")
GET_SCRIPT = Path(__file__).with_name("get.lua")
REQUEST_TIMEOUT_S = 10


def wrk_path() -> str | None:
    return shutil.which("wrk")


def describe() -> str:
    """Which load generator this run uses, with its version."""
    path = wrk_path()
    if path is None:
        return "python (httpx threads; wrk missing)"
    probe = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)  # noqa: S603
    first = (probe.stdout or probe.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def submit_load(
    url: str,
    body: str,
    requests: int,
    concurrency: int,
    timeout_s: float,
    collect_ids: bool = False,
    close: bool = False,
) -> dict[str, Any]:
    """POST ``body`` to ``url`` ``requests`` times from ``concurrency`` connections.

    Returns the figures of bench.report.parse_wrk plus ``ids`` (when asked),
    ``truncated`` (the phase hit ``timeout_s`` before sending everything) and
    ``generator``. ``close``: a new connection per request (``Connection: close``).
    """
    if wrk_path() is not None:
        return _wrk(url, body, requests, concurrency, timeout_s, collect_ids, close)
    return _python(url, body, requests, concurrency, timeout_s, collect_ids, close)


def get_load(
    base: str, prefix: str, ids: list[str], requests: int, concurrency: int, timeout_s: float
) -> dict[str, Any]:
    """GET ``base + prefix + id`` ``requests`` times, cycling through ``ids``.

    With as many requests as ids, each id is read once. Same figures as
    ``submit_load``.
    """
    if not ids:
        raise ValueError("get_load needs at least one id")
    if wrk_path() is None:
        return _python_get(base + prefix, ids, requests, concurrency, timeout_s)
    threads = 1 if concurrency == 1 else 2
    with tempfile.TemporaryDirectory(prefix="taskplane-bench-") as scratch:
        ids_path = Path(scratch) / "ids.txt"
        ids_path.write_text("\n".join(ids) + "\n")
        env = {
            **os.environ,
            "BENCH_IDS_IN": str(ids_path),
            "BENCH_PREFIX": prefix,
            "BENCH_REQUESTS": str(requests),
            "BENCH_THREADS": str(threads),
        }
        argv = _wrk_argv(GET_SCRIPT, base + prefix + ids[0], threads, concurrency, timeout_s)
        result = parse_wrk(_run_wrk(argv, env, threads if requests else 0, timeout_s))
    result["truncated"] = bool(requests) and result["requests"] < requests
    result["generator"] = "wrk"
    return result


def _wrk_argv(
    script: Path, url: str, threads: int, concurrency: int, timeout_s: float
) -> list[str]:
    return [
        str(wrk_path()),
        "-t", str(threads),
        "-c", str(concurrency),
        "-d", f"{max(1, int(timeout_s))}s",
        "--timeout", f"{REQUEST_TIMEOUT_S}s",
        "--latency",
        "-s", str(script),
        url,
    ]  # fmt: skip


def _wrk(
    url: str,
    body: str,
    requests: int,
    concurrency: int,
    timeout_s: float,
    collect_ids: bool,
    close: bool = False,
) -> dict[str, Any]:
    threads = 1 if concurrency == 1 else 2
    with tempfile.TemporaryDirectory(prefix="taskplane-bench-") as scratch:
        ids_path = Path(scratch) / "ids.txt"
        env = {
            **os.environ,
            "BENCH_BODY": body,
            "BENCH_REQUESTS": str(requests),
            "BENCH_THREADS": str(threads),
            "BENCH_IDS": str(ids_path) if collect_ids else "",
            "BENCH_CLOSE": "1" if close else "",
        }
        argv = _wrk_argv(LUA_SCRIPT, url, threads, concurrency, timeout_s)
        output = _run_wrk(argv, env, threads if requests else 0, timeout_s)
        result = parse_wrk(output)
        if collect_ids:
            result["ids"] = ids_path.read_text().split() if ids_path.exists() else []
    result["truncated"] = bool(requests) and result["requests"] < requests
    result["generator"] = "wrk"
    return result


def _run_wrk(argv: list[str], env: dict[str, str], threads: int, timeout_s: float) -> str:
    """Run wrk; once each of ``threads`` threads sent its share, SIGINT it.

    wrk's main thread sleeps for all of ``-d`` even when its threads stopped
    early; on SIGINT it stops sleeping and reports as usual, with the runtime
    measured up to then. ``threads=0``: a duration run, wrk ends on its own.
    """
    process = subprocess.Popen(  # noqa: S603 - our own argv
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    finished = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        done = 0
        for line in process.stdout:
            lines.append(line)
            if line.startswith("BENCH_THREAD_DONE"):
                done += 1
                if done == threads:
                    finished.set()
        finished.set()  # wrk exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        finished.wait(timeout_s + 15)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    reader.join(5)
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr or ''.join(lines)}")
    return "".join(lines)


def _python(
    url: str,
    body: str,
    requests: int,
    concurrency: int,
    timeout_s: float,
    collect_ids: bool,
    close: bool = False,
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if close:
        headers["Connection"] = "close"

    def send(client: httpx.Client, _: int) -> httpx.Response:
        return client.post(url, content=body, headers=headers)

    return _python_load(send, requests, concurrency, timeout_s, collect_ids)


def _python_get(
    url_prefix: str, ids: list[str], requests: int, concurrency: int, timeout_s: float
) -> dict[str, Any]:
    def send(client: httpx.Client, ticket: int) -> httpx.Response:
        return client.get(url_prefix + ids[ticket % len(ids)])

    return _python_load(send, requests, concurrency, timeout_s, False)


def _python_load(
    send: Callable[[httpx.Client, int], httpx.Response],
    requests: int,
    concurrency: int,
    timeout_s: float,
    collect_ids: bool,
) -> dict[str, Any]:
    """``requests`` calls of ``send(client, ticket)`` from ``concurrency`` threads."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    ids: list[str] = []
    errors = Counter({"connect": 0, "read": 0, "write": 0, "timeout": 0})
    tickets = itertools.count()  # next() is atomic under the GIL
    deadline = time.monotonic() + timeout_s
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while time.monotonic() < deadline:
                ticket = next(tickets)
                if requests and ticket >= requests:
                    return
                started = time.perf_counter()
                try:
                    answer = send(client, ticket)
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.HTTPError:
                    errors["read"] += 1
                    continue
                elapsed = (time.perf_counter() - started) * 1000.0
                job_id = None
                if collect_ids and answer.is_success:
                    job_id = answer.json().get("id")
                with lock:
                    latencies.append(elapsed)
                    statuses[str(answer.status_code)] += 1
                    if job_id:
                        ids.append(job_id)

    workers = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout_s + 30)
    seconds = time.perf_counter() - began
    result: dict[str, Any] = {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p75_ms": percentile(latencies, 75),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "histogram_us": dict(Counter(round(ms * 1000) for ms in latencies)),
        "non_2xx": sum(n for code, n in statuses.items() if not code.startswith(("2", "3"))),
        "socket_errors": dict(errors),
        "statuses": dict(statuses),
        "truncated": bool(requests) and len(latencies) < requests,
        "generator": "python",
    }
    if collect_ids:
        result["ids"] = ids
    return result
