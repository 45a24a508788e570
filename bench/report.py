"""The pure parts of the benchmark: parsing, statistics, targets and the table.

Nothing here talks to a service or starts a process, so
``tests/unit/test_bench_report.py`` covers it all without RabbitMQ or Redis.
Results are plain nested dicts (they go to ``bench/out/results.json`` as they
are); a figure is addressed by a dotted path such as ``taskplane.submit_c16.rps``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SYSTEMS = ("ceiling", "baseline", "guarded", "taskplane")
COMPARED = ("baseline", "guarded", "taskplane")  # the systems with figures of their own

# -- wrk output ----------------------------------------------------------------

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\S+)\s*$", re.MULTILINE)
_SUMMARY = re.compile(r"^\s*(\d+) requests in (\S+),", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_LATENCY_ROW = re.compile(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
_STATUS_LINE = re.compile(r"^BENCH_STATUS(.*)$", re.MULTILINE)
_HISTOGRAM_LINE = re.compile(r"^BENCH_LATENCY_US ?(.*)$", re.MULTILINE)


def parse_wrk_time_ms(text: str) -> float:
    """A wrk duration (``850.00us``, ``4.12ms``, ``1.20s``, ``2.00m``) in milliseconds."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """The figures of one ``wrk --latency`` run (and our Lua script's status line).

    Returns requests, seconds, rps, p50_ms/p75_ms/p90_ms/p99_ms, avg_ms, max_ms,
    non_2xx, socket_errors, and what submit.lua printed: statuses ({code: count})
    and histogram_us ({latency in microseconds: count}).
    """
    summary = _SUMMARY.search(output)
    rps = _RPS.search(output)
    if not summary or not rps:
        raise ValueError("wrk output has no request summary:\n" + output[-2000:])
    result: dict[str, Any] = {
        "requests": int(summary.group(1)),
        "seconds": parse_wrk_time_ms(summary.group(2)) / 1000.0,
        "rps": float(rps.group(1)),
    }
    latency = _LATENCY_ROW.search(output)
    if latency:
        result["avg_ms"] = parse_wrk_time_ms(latency.group(1))
        result["max_ms"] = parse_wrk_time_ms(latency.group(3))
    for percent, value in _PERCENTILE.findall(output):
        result[f"p{float(percent):g}_ms"] = parse_wrk_time_ms(value)
    non_2xx = _NON_2XX.search(output)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    socket = _SOCKET.search(output)
    names = ("connect", "read", "write", "timeout")
    result["socket_errors"] = dict(
        zip(names, (int(g) for g in socket.groups()) if socket else (0, 0, 0, 0), strict=True)
    )
    histogram = _HISTOGRAM_LINE.search(output)
    if histogram:
        result["histogram_us"] = parse_histogram(histogram.group(1))
    status = _STATUS_LINE.search(output)
    if status:
        statuses: dict[str, int] = {}
        for pair in status.group(1).split():
            code, _, count = pair.partition("=")
            statuses[code] = statuses.get(code, 0) + int(count)
        result["statuses"] = statuses
    return result


def parse_histogram(text: str) -> dict[int, int]:
    """``"812:3,950:1"`` (microseconds:count) as {812: 3, 950: 1}."""
    histogram: dict[int, int] = {}
    for pair in text.strip().split(","):
        if pair:
            value, _, count = pair.partition(":")
            histogram[int(value)] = histogram.get(int(value), 0) + int(count)
    return histogram


# -- statistics ------------------------------------------------------------------


def histogram_percentile(histogram: dict[int, int], q: float) -> int | None:
    """wrk's own percentile of a {value: count} histogram: the value at rank q% (nearest rank)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = math.floor(q / 100.0 * total + 0.5 + 0.5)  # wrk: round(p/100 * count + 0.5)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)


def merge_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several load runs against one system as one: rates over the summed time,
    percentiles from the merged latency histograms."""
    requests = sum(run["requests"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    histogram: dict[int, int] = {}
    statuses: dict[str, int] = {}
    sockets = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    for run in runs:
        for value, count in (run.get("histogram_us") or {}).items():
            histogram[value] = histogram.get(value, 0) + count
        for code, count in (run.get("statuses") or {}).items():
            statuses[code] = statuses.get(code, 0) + count
        for kind, count in (run.get("socket_errors") or {}).items():
            sockets[kind] = sockets.get(kind, 0) + count
    merged: dict[str, Any] = {
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds if seconds > 0 else None,
        "rounds": len(runs),
        "rps_each": [run.get("rps") for run in runs],
        "non_2xx": sum(run.get("non_2xx", 0) for run in runs),
        "socket_errors": sockets,
        "statuses": statuses,
        "truncated": any(run.get("truncated") for run in runs),
    }
    for q in (50, 75, 90, 99):
        value = histogram_percentile(histogram, q)
        if value is None:  # no histograms: the median of the runs' own figures
            value_ms = percentile([r[f"p{q}_ms"] for r in runs if r.get(f"p{q}_ms")], 50)
        else:
            value_ms = value / 1000.0
        merged[f"p{q}_ms"] = value_ms
    merged["max_ms"] = max(histogram) / 1000.0 if histogram else None
    return merged


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile out of range: {q}")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(values: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of latencies already in milliseconds."""
    return {
        "samples": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


def rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def lookup(results: dict[str, Any], path: str | None) -> Any:
    """The figure at a dotted path, or None where any part is missing."""
    if path is None:
        return None
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def per_job(before: float | None, after: float | None, jobs: int) -> float | None:
    """(after - before) / jobs: what each of ``jobs`` added to a memory figure."""
    if before is None or after is None or jobs <= 0:
        return None
    return (after - before) / jobs


BACKLOG_RATIOS = {
    "submit_c16_rps": "submit_c16.rps",
    "submit_c16_p99_ms": "submit_c16.p99_ms",
    "get_c16_rps": "get_c16.rps",
    "get_c16_p50_ms": "get_c16.p50_ms",
    "get_c16_p99_ms": "get_c16.p99_ms",
    "drain_per_s": "drain.per_s",
}


def strip_histograms(node: Any) -> Any:
    """``node`` without its wrk latency histograms (they are for merging, not for the JSON)."""
    if isinstance(node, dict):
        return {k: strip_histograms(v) for k, v in node.items() if k != "histogram_us"}
    if isinstance(node, list):
        return [strip_histograms(item) for item in node]
    return node


def merge_backlog_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Backlog rounds of one side (empty or full) as one: submit and GET runs merged as
    merge_runs does, the drain rate over the summed drain times."""
    merged: dict[str, Any] = {"rounds": len(rounds)}
    for key in ("submit_c16", "get_c16"):
        runs = [r[key] for r in rounds if r.get(key)]
        if runs:
            merged[key] = merge_runs(runs)
    drains = [r["drain"] for r in rounds if r.get("drain")]
    if drains:
        finished = sum(d["finished"] for d in drains)
        seconds = sum(d["seconds"] for d in drains)
        merged["drain"] = {
            "jobs": sum(d["jobs"] for d in drains),
            "finished": finished,
            "failed": sum(d.get("failed", 0) for d in drains),
            "seconds": seconds,
            "per_s": rate(finished - len(drains), seconds),  # each drain: first to last
            "per_s_each": [d.get("per_s") for d in drains],
        }
    return merged


def backlog_ratios(backlog: dict[str, Any]) -> dict[str, float | None]:
    """Each backlog figure with the queue full over the same with it empty."""
    return {
        name: ratio(lookup(backlog, f"full.{path}"), lookup(backlog, f"empty.{path}"))
        for name, path in BACKLOG_RATIOS.items()
    }


# -- the rows of the table ---------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    ceiling: str | None
    baseline: str | None
    taskplane: str | None
    higher_is_better: bool = True
    kind: str = "rate"  # rate (per second), ms or mb
    guarded: str | None = None


def _row(
    label: str,
    ceiling: str | None,
    path: str,
    kind: str = "rate",
    systems: Sequence[str] = COMPARED,
) -> Row:
    """A row whose figure sits at ``<system>.<path>`` for each of ``systems``."""
    paths = {name: f"{name}.{path}" if name in systems else None for name in COMPARED}
    return Row(
        label,
        ceiling,
        paths["baseline"],
        paths["taskplane"],
        kind == "rate",
        kind,
        paths["guarded"],
    )


TASKPLANE = ("taskplane",)
SINK = "sink.ceiling.keepalive_c16.rps"  # the webhook job's ceiling: what the sink takes

ROWS: tuple[Row, ...] = (
    _row("submit c1 (req/s)", "ceiling.publish_sync.per_s", "submit_c1.rps"),
    _row("submit c1 p50 (ms)", "ceiling.publish_sync.p50_ms", "submit_c1.p50_ms", "ms"),
    _row("submit c1 p99 (ms)", "ceiling.publish_sync.p99_ms", "submit_c1.p99_ms", "ms"),
    _row("submit c16 (req/s)", "ceiling.publish_window.per_s", "submit_c16.rps"),
    _row("submit c16 p50 (ms)", None, "submit_c16.p50_ms", "ms"),
    _row("submit c16 p99 (ms)", None, "submit_c16.p99_ms", "ms"),
    _row("batch submit (jobs/s)", "ceiling.publish_window.per_s", "batch.per_s", "rate", TASKPLANE),
    _row("worker drain, backlog of N (jobs/s)", "ceiling.consume.per_s", "drain.per_s"),
    _row("end-to-end c16 (jobs/s)", "ceiling.consume.per_s", "e2e.per_s"),
    _row("webhook submit c16 (req/s)", None, "webhook.submit_c16.rps"),
    _row("webhook drain (jobs/s)", SINK, "webhook.drain.per_s"),
    _row("webhook end-to-end c16 (jobs/s)", SINK, "webhook.e2e.per_s"),
    _row(
        "idle created->started p50 (ms)",
        None,
        "idle.started_minus_created.p50_ms",
        "ms",
        TASKPLANE,
    ),
    _row(
        "idle created->started p99 (ms)",
        None,
        "idle.started_minus_created.p99_ms",
        "ms",
        TASKPLANE,
    ),
    _row("idle submit->done p50 (ms)", None, "idle.submit_to_done.p50_ms", "ms"),
    _row("idle submit->done p99 (ms)", None, "idle.submit_to_done.p99_ms", "ms"),
    _row("workflow 1->100->1 (steps/s)", None, "workflow.steps_per_s", "rate", TASKPLANE),
    _row("same 102 jobs, plain (jobs/s)", None, "workflow.plain_jobs_per_s", "rate", TASKPLANE),
    _row("web worker RSS (MB)", None, "rss_mb.web", "mb"),
    _row("worker RSS, no-op job (MB) *", None, "rss_mb.worker", "mb"),
    _row("worker RSS, webhook job (MB) *", None, "webhook.rss_mb.worker", "mb"),
)

# The backlog table: Taskplane's figures with an empty queue and with the backlog,
# as (label, key in BACKLOG_RATIOS, kind).
BACKLOG_ROWS: tuple[tuple[str, str, str], ...] = (
    ("submit c16 (req/s)", "submit_c16_rps", "rate"),
    ("submit c16 p99 (ms)", "submit_c16_p99_ms", "ms"),
    ("GET /jobs/<id> c16 (req/s)", "get_c16_rps", "rate"),
    ("GET /jobs/<id> c16 p50 (ms)", "get_c16_p50_ms", "ms"),
    ("GET /jobs/<id> c16 p99 (ms)", "get_c16_p99_ms", "ms"),
    ("drain, first N finishes (jobs/s)", "drain_per_s", "rate"),
)


# -- targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    value: float | None
    limit: float
    at_least: bool  # True: value >= limit passes; False: value <= limit passes
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """True/False, or None when the figure could not be measured."""
        if self.value is None:
            return None
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _versus(results: dict[str, Any], path: str, other: str) -> float | None:
    """Taskplane's figure at ``path`` over ``other``'s."""
    return ratio(lookup(results, f"taskplane.{path}"), lookup(results, f"{other}.{path}"))


# (name, description, path, versus, at least): Taskplane / another system's figure.
RATIO_TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("drain_vs_baseline", "worker drain >= 1.0x baseline", "drain.per_s", "baseline", 1.0),
    ("e2e_vs_baseline", "end-to-end jobs/s >= 1.0x baseline", "e2e.per_s", "baseline", 1.0),
    (
        "webhook_drain_vs_baseline",
        "webhook worker drain >= 1.0x baseline",
        "webhook.drain.per_s",
        "baseline",
        1.0,
    ),
    (
        "webhook_e2e_vs_baseline",
        "webhook end-to-end jobs/s >= 1.0x baseline",
        "webhook.e2e.per_s",
        "baseline",
        1.0,
    ),
    (
        "submit_c16_vs_guarded",
        "single submit throughput at c16 >= 1.5x guarded",
        "submit_c16.rps",
        "guarded",
        1.5,
    ),
    ("drain_vs_guarded", "worker drain >= 1.5x guarded", "drain.per_s", "guarded", 1.5),
    ("e2e_vs_guarded", "end-to-end jobs/s >= 1.5x guarded", "e2e.per_s", "guarded", 1.5),
    (
        "submit_c16_vs_baseline",
        "single submit throughput at c16 >= 1.0x baseline",
        "submit_c16.rps",
        "baseline",
        1.0,
    ),
)

# (name, what, key of backlog_ratios, at least, limit): with the backlog / empty queue.
BACKLOG_TARGETS: tuple[tuple[str, str, str, bool, float], ...] = (
    ("backlog_submit_c16", "submit c16 rate", "submit_c16_rps", True, 0.9),
    ("backlog_get_p50", "GET /jobs/<id> p50", "get_c16_p50_ms", False, 1.1),
    ("backlog_drain", "drain rate", "drain_per_s", True, 0.9),
)


def worker_rss(results: dict[str, Any], system: str = "taskplane") -> tuple[float | None, str]:
    """The no-op worker's RSS that holds a job (its pool child, else the worker process),
    and a note when it is the process; results of earlier runs have worker_child only."""
    rss = lookup(results, f"{system}.rss_mb") or {}
    if rss.get("worker") is None:
        return rss.get("worker_child"), ""
    measured = rss.get("measured", "pool child")
    return rss["worker"], "" if measured == "pool child" else measured


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    """The issue's targets, each against the figures of this run."""
    batch = lookup(results, "taskplane.batch") or {}
    batch_note = "" if batch.get("available", True) else "batch: not available"
    size = lookup(results, "taskplane.backlog.size") or lookup(results, "settings.backlog")
    waiting = f"{size:,} waiting" if isinstance(size, int) else "a backlog waiting"
    rss, rss_note = worker_rss(results)
    growth = backlog_ratios(lookup(results, "taskplane.backlog") or {})
    targets = [
        Target(name, description, _versus(results, path, other), limit, True, "x")
        for name, description, path, other, limit in RATIO_TARGETS
    ]
    targets += [
        Target(
            "submit_c16_p99",
            "single submit p99 at c16 <= 25 ms",
            lookup(results, "taskplane.submit_c16.p99_ms"),
            25.0,
            False,
            "ms",
        ),
        Target(
            "batch_submit",
            "batch submit >= 15,000 jobs/s accepted",
            lookup(results, "taskplane.batch.per_s"),
            15_000.0,
            True,
            "jobs/s",
            batch_note,
        ),
    ]
    targets += [
        Target(
            name,
            f"backlog: {what} with {waiting} {'>=' if at_least else '<='} {limit:g}x empty",
            growth[key],
            limit,
            at_least,
            "x",
        )
        for name, what, key, at_least, limit in BACKLOG_TARGETS
    ]
    targets += [
        Target(
            "idle_started_p50",
            "idle submit->started p50 <= 5 ms",
            lookup(results, "taskplane.idle.started_minus_created.p50_ms"),
            5.0,
            False,
            "ms",
        ),
        Target(
            "web_rss",
            "web worker RSS <= 80 MB",
            lookup(results, "taskplane.rss_mb.web"),
            80.0,
            False,
            "MB",
        ),
        Target("worker_child_rss", "worker child RSS <= 100 MB", rss, 100.0, False, "MB", rss_note),
    ]
    return targets


def mark(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


# -- formatting -----------------------------------------------------------------------


def format_value(value: Any, kind: str = "rate") -> str:
    """A figure for the table: rates as whole numbers, ms with precision, MB with one digit."""
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if kind == "mb":
        return f"{value:.1f}"
    if kind == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f}"  # rates, bytes


def machine_lines(machine: dict[str, Any]) -> list[str]:
    return [
        f"machine : {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('ram_gb', '?')} GB RAM",
        f"versions: Python {machine.get('python', '?')}, RabbitMQ "
        f"{machine.get('rabbitmq', '?')} (Erlang {machine.get('erlang', '?')}), Redis "
        f"{machine.get('redis', '?')}, Celery {machine.get('celery', '?')}, "
        f"load: {machine.get('load_generator', '?')}",
    ]


def workers_line(settings: dict[str, Any], taskplane: dict[str, Any]) -> str:
    """How Taskplane's workers ran: the groups' config, what the workers said, the knobs."""
    groups = settings.get("taskplane_worker_groups") or {}
    kinds = settings.get("taskplane_groups") or {}
    said = taskplane.get("workers") or {}
    parts = []
    for kind in ("noop", "webhook"):
        group = kinds.get(kind, "?")
        config = groups.get(group) or {}
        prefetch = config.get("prefetch_multiplier")
        parts.append(
            f"{group} ({kind}): {config.get('pool', '?')}, concurrency "
            f"{config.get('concurrency') or 'one per CPU'}"
            + (f", prefetch {prefetch}" if prefetch else "")
            + f" -> {said.get(kind) or '?'}"
        )
    count = settings.get("taskplane_workers", 1)
    extra = settings.get("taskplane_worker_args") or []
    return (
        f"taskplane workers: {'; '.join(parts)}; {count} no-op worker process(es); "
        f"extra worker args: {' '.join(extra) if extra else 'none'}"
    )


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in ROWS:
        ceiling = lookup(results, row.ceiling)
        baseline = lookup(results, row.baseline)
        guarded = lookup(results, row.guarded)
        taskplane = lookup(results, row.taskplane)
        rows.append(
            [
                row.label,
                format_value(ceiling, row.kind),
                format_value(baseline, row.kind),
                format_value(guarded, row.kind),
                format_value(taskplane, row.kind),
                format_value(ratio(taskplane, baseline), "x"),
                format_value(ratio(taskplane, guarded), "x"),
                format_value(ratio(taskplane, ceiling), "x"),
            ]
        )
    return rows


def backlog_rows(backlog: dict[str, Any]) -> list[list[str]]:
    """figure, empty, with the backlog, backlog/empty: Taskplane's backlog table."""
    ratios = backlog_ratios(backlog)
    rows = []
    for label, key, kind in BACKLOG_ROWS:
        path = BACKLOG_RATIOS[key]
        empty = format_value(lookup(backlog, f"empty.{path}"), kind)
        full = format_value(lookup(backlog, f"full.{path}"), kind)
        rows.append([label, empty, full, format_value(ratios[key], "x")])
    return rows


def columns(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """``header`` and ``body`` as aligned lines: the first column left, the rest right."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


def rss_note(results: dict[str, Any]) -> str:
    """The footnote of the two worker RSS rows: which figure each system's row shows."""
    processes = []
    for system in COMPARED:
        for key, job in (("rss_mb", "no-op"), ("webhook.rss_mb", "webhook")):
            rss = lookup(results, f"{system}.{key}") or {}
            if rss.get("worker") is not None and rss.get("measured") != "pool child":
                processes.append(f"{system} {job}")
    where = (
        f"; the pool has no children (threads), so the worker process, for: {', '.join(processes)}"
        if processes
        else ""
    )
    return f"* worker RSS: the largest pool child (where a job runs){where}."


def sink_line(results: dict[str, Any]) -> str:
    """What the webhook job did and how much the HTTP sink can take."""
    sink = results.get("sink") or {}
    settings = results.get("settings") or {}
    keep = lookup(sink, "ceiling.keepalive_c16.rps")
    close = lookup(sink, "ceiling.close_c16.rps")
    return (
        f"webhook: {settings.get('webhook_jobs', '?')} jobs per system and phase, each one "
        f"POST of a small JSON body with httpx to a local sink (bench/sink.py; every system "
        f"keeps one pooled client per worker process); the sink's own ceiling from wrk at "
        f"c16: {format_value(keep)} req/s keep-alive (the ceiling column), "
        f"{format_value(close)} req/s with a new connection per request; it answered "
        f"{format_value(sink.get('job_requests'))} POSTs for "
        f"{format_value(sink.get('jobs_finished'))} webhook jobs finished."
    )


def memory_lines(memory: dict[str, Any]) -> list[str]:
    """Memory per job, Redis and RabbitMQ, from taskplane.memory."""
    queued = lookup(memory, "redis.queued") or {}
    finished = lookup(memory, "redis.finished") or {}
    rabbit = memory.get("rabbitmq") or {}
    return [
        f"memory per job (Taskplane): Redis {_bytes(queued, 'bytes_per_job')} per queued job "
        f"(used_memory over {format_value(queued.get('jobs'))} records; MEMORY USAGE of one "
        f"record {_bytes(queued, 'record_bytes_sampled')}, {_keys(queued)} keys per job), "
        f"{_bytes(finished, 'bytes_per_job', finished.get('record_bytes_sampled'))} per finished "
        f"job (over {format_value(finished.get('jobs'))}; one record "
        f"{_bytes(finished, 'record_bytes_sampled')}, {_keys(finished)} keys per job);",
        f"  RabbitMQ per waiting message ({format_value(rabbit.get('messages'))} in the quorum "
        f"queue): {_bytes(rabbit, 'queue_bytes_per_job', 0)} of the queue's memory, "
        f"{_bytes(rabbit, 'node_bytes_per_job', 0)} of the node's (used_memory and the node's "
        f"memory are server-wide: other databases and vhosts move them).",
    ]


def _bytes(figures: dict[str, Any], key: str, floor: float | None = None) -> str:
    """``figures[key]`` in bytes, marked when below ``floor`` (what one record holds by
    itself, or zero): then a server-wide delta was moved by something else."""
    value = figures.get(key)
    text = f"{format_value(value)} B"
    if value is not None and floor is not None and value < floor:
        text += " (noise: below what it must be)"
    return text


def _keys(figures: dict[str, Any]) -> str:
    keys = figures.get("keys_per_job")
    return "-" if keys is None else f"{keys:.2f}"


def workflow_line(workflow: dict[str, Any]) -> str:
    """What the two workflow rows measured, and the one ratio that matters between them."""
    each = ", ".join(format_value(v) for v in workflow.get("steps_per_s_each") or [])
    plain = ", ".join(format_value(v) for v in workflow.get("plain_jobs_per_s_each") or [])
    share = format_value(ratio(workflow.get("steps_per_s"), workflow.get("plain_jobs_per_s")), "x")
    return (
        f"workflow: {workflow.get('rounds', '?')} workflows {workflow.get('shape', '')} in "
        f"sequence on Taskplane's worker, start() to finished, steps/s each [{each}]; plain: "
        f"the same number of echo jobs as one submit, first submit to last finish [{plain}]; "
        f"workflow/plain {share}."
    )


CPU_PARTS = ("web", "worker", "rabbitmq", "redis")


def cpu_lines(results: dict[str, Any]) -> list[str]:
    """CPU ms per job end to end, by process, for each system and job (where measured)."""
    rows = []
    for label, section in (("no-op", ""), ("webhook", "webhook.")):
        for system in ("baseline", "guarded", "taskplane"):
            split = lookup(results, f"{system}.{section}e2e.cpu_ms_per_job") or {}
            if split:
                rows.append(
                    [f"{label}, {system}"]
                    + [format_value(split.get(part), "ms") for part in (*CPU_PARTS, "total")]
                )
    if not rows:
        return []
    header = ["CPU ms per job, end to end", *CPU_PARTS, "total"]
    return [
        *columns(header, rows),
        "(utime+stime from /proc over the rounds, with reaped children's; RabbitMQ and Redis "
        "serve one system at a time; the load generator and the bench's polling are not counted)",
    ]


def format_table(results: dict[str, Any], targets: Sequence[Target] | None = None) -> str:
    """The whole report: machine header, figures per system with ratios, notes, targets."""
    settings = results.get("settings", {})
    lines = [
        f"Taskplane benchmark: N={settings.get('jobs', '?')} jobs per phase"
        + (" (quick)" if settings.get("quick") else ""),
        *machine_lines(results.get("machine", {})),
    ]
    if "taskplane_worker_groups" in settings:
        lines.append(workers_line(settings, results.get("taskplane") or {}))
    lines.append("")
    header = ["figure", "ceiling", "baseline", "guarded", "taskplane", "tp/base", "tp/guarded",
              "tp/ceil"]  # fmt: skip
    lines += columns(header, table_rows(results))
    lines.append("")
    lines.append(
        "ceiling: c1 = pika publish + wait for each confirm; c16 and batch = pika with a "
        "window of outstanding confirms; drain and end-to-end = pika consume, manual ack; "
        "webhook = what the HTTP sink takes."
    )
    lines.append(
        "baseline: plain Flask + Celery, Celery's defaults; guarded: the same with late acks, "
        "reject on worker lost, publisher confirms, a quorum queue, task events, track started."
    )
    lines.append(rss_note(results))
    if results.get("sink"):
        lines.append(sink_line(results))
    workflow = lookup(results, "taskplane.workflow") or {}
    if workflow:
        lines.append(workflow_line(workflow))
    batch = lookup(results, "taskplane.batch") or {}
    if batch.get("available") is False:
        lines.append(f"batch: not available (POST /jobs/batch answered {batch.get('status', '?')})")
    backlog = lookup(results, "taskplane.backlog") or {}
    if backlog.get("empty") or backlog.get("full"):
        lines += ["", *backlog_section(backlog)]
    waiters = lookup(results, "taskplane.waiters") or {}
    if waiters.get("none") or waiters.get("loaded"):
        lines += ["", *waiters_section(waiters)]
    memory = lookup(results, "taskplane.memory") or {}
    if memory:
        lines += ["", *memory_lines(memory)]
    job_memory = lookup(results, "taskplane.job_memory") or {}
    if job_memory:
        from bench.job_memory import lines as job_memory_lines

        lines += job_memory_lines(job_memory)
    cpu = cpu_lines(results)
    if cpu:
        lines += ["", *cpu]
    targets = list(targets if targets is not None else evaluate_targets(results))
    lines.append("")
    lines.append("targets:")
    for target in targets:
        kind = {"x": "x", "ms": "ms", "MB": "mb"}.get(target.unit, "rate")
        unit = "" if target.unit == "x" else f" {target.unit}"
        note = f"  ({target.note})" if target.note else ""
        value = format_value(target.value, kind)
        lines.append(f"  [{mark(target.passed)}] {target.description}: {value}{unit}{note}")
    warnings = results.get("warnings") or []
    if warnings:
        lines.append("")
        lines.append("warnings:")
        lines += [f"  {w}" for w in warnings]
    errors = results.get("errors") or []
    if errors:
        lines.append("")
        lines.append("errors:")
        lines += [f"  {e}" for e in errors]
    return "\n".join(lines)


def backlog_section(backlog: dict[str, Any]) -> list[str]:
    """Taskplane with an empty queue and with the backlog waiting, figure by figure."""
    size = backlog.get("size")
    waiting = f"{size:,} waiting" if isinstance(size, int) else "backlog"
    fill = backlog.get("fill") or {}
    intro = (
        f"backlog growth (Taskplane, no-op job, N={backlog.get('jobs', '?')}): an empty queue "
        f"({lookup(backlog, 'empty.rounds') or '?'} rounds, before and after) vs {waiting} in "
        f"the same queue; no worker runs during submit and GET. Filled through POST "
        f"/jobs/batch at {format_value(fill.get('per_s'))} jobs/s."
    )
    header = ["figure", "empty", waiting, "backlog/empty"]
    return [intro, *columns(header, backlog_rows(backlog))]


def waiters_section(waiters: dict[str, Any]) -> list[str]:
    """Submit c16 with nobody waiting vs with W requests waiting (GET /jobs/<id>?wait_s=30)."""
    count = waiters.get("count", "?")
    intro = (
        f"waiters (Taskplane, no-op job, no worker running): submit c16 with none vs {count} "
        f"requests waiting on a job (wait slots {waiters.get('slots_per_process', '?')} per web "
        f"process; answers {waiters.get('answers') or {}}, woken by the cancel within "
        f"{format_value(waiters.get('woken_max_ms'), 'ms')} ms)"
    )
    rows = []
    for label, path, kind in (
        ("submit c16 (req/s)", "submit_c16.rps", "rate"),
        ("submit c16 p50 (ms)", "submit_c16.p50_ms", "ms"),
        ("submit c16 p99 (ms)", "submit_c16.p99_ms", "ms"),
    ):
        none, loaded = lookup(waiters, f"none.{path}"), lookup(waiters, f"loaded.{path}")
        cells = [format_value(none, kind), format_value(loaded, kind)]
        rows.append([label, *cells, format_value(ratio(loaded, none), "x")])
    rss = waiters.get("rss_mb") or {}
    none_mb, loaded_mb = rss.get("none"), rss.get("loaded")
    rows.append(
        ["web worker RSS (MB)", format_value(none_mb, "mb"), format_value(loaded_mb, "mb"),
         format_value(ratio(loaded_mb, none_mb), "x")]
    )  # fmt: skip
    header = ["figure", "no waiter", f"{count} waiting", "waiting/none"]
    return [intro, *columns(header, rows)]
