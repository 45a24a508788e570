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

SYSTEMS = ("ceiling", "baseline", "taskplane")

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


# -- the rows of the table ---------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    ceiling: str | None
    baseline: str | None
    taskplane: str | None
    higher_is_better: bool = True
    kind: str = "rate"  # rate (per second), ms or mb


ROWS: tuple[Row, ...] = (
    Row(
        "submit c1 (req/s)",
        "ceiling.publish_sync.per_s",
        "baseline.submit_c1.rps",
        "taskplane.submit_c1.rps",
    ),
    Row(
        "submit c1 p50 (ms)",
        "ceiling.publish_sync.p50_ms",
        "baseline.submit_c1.p50_ms",
        "taskplane.submit_c1.p50_ms",
        False,
        "ms",
    ),
    Row(
        "submit c1 p99 (ms)",
        "ceiling.publish_sync.p99_ms",
        "baseline.submit_c1.p99_ms",
        "taskplane.submit_c1.p99_ms",
        False,
        "ms",
    ),
    Row(
        "submit c16 (req/s)",
        "ceiling.publish_window.per_s",
        "baseline.submit_c16.rps",
        "taskplane.submit_c16.rps",
    ),
    Row(
        "submit c16 p50 (ms)",
        None,
        "baseline.submit_c16.p50_ms",
        "taskplane.submit_c16.p50_ms",
        False,
        "ms",
    ),
    Row(
        "submit c16 p99 (ms)",
        None,
        "baseline.submit_c16.p99_ms",
        "taskplane.submit_c16.p99_ms",
        False,
        "ms",
    ),
    Row("batch submit (jobs/s)", "ceiling.publish_window.per_s", None, "taskplane.batch.per_s"),
    Row(
        "worker drain, backlog of N (jobs/s)",
        "ceiling.consume.per_s",
        "baseline.drain.per_s",
        "taskplane.drain.per_s",
    ),
    Row(
        "end-to-end c16 (jobs/s)",
        "ceiling.consume.per_s",
        "baseline.e2e.per_s",
        "taskplane.e2e.per_s",
    ),
    Row(
        "idle created->started p50 (ms)",
        None,
        None,
        "taskplane.idle.started_minus_created.p50_ms",
        False,
        "ms",
    ),
    Row(
        "idle created->started p99 (ms)",
        None,
        None,
        "taskplane.idle.started_minus_created.p99_ms",
        False,
        "ms",
    ),
    Row(
        "idle submit->done p50 (ms)",
        None,
        "baseline.idle.submit_to_done.p50_ms",
        "taskplane.idle.submit_to_done.p50_ms",
        False,
        "ms",
    ),
    Row(
        "idle submit->done p99 (ms)",
        None,
        "baseline.idle.submit_to_done.p99_ms",
        "taskplane.idle.submit_to_done.p99_ms",
        False,
        "ms",
    ),
    Row("workflow 1->100->1 (steps/s)", None, None, "taskplane.workflow.steps_per_s"),
    Row("same 102 jobs, plain (jobs/s)", None, None, "taskplane.workflow.plain_jobs_per_s"),
    Row("web worker RSS (MB)", None, "baseline.rss_mb.web", "taskplane.rss_mb.web", False, "mb"),
    Row(
        "worker child RSS (MB)",
        None,
        "baseline.rss_mb.worker_child",
        "taskplane.rss_mb.worker_child",
        False,
        "mb",
    ),
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


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    """The issue's targets, each against the figures of this run."""
    batch = lookup(results, "taskplane.batch") or {}
    batch_note = "" if batch.get("available", True) else "batch: not available"
    return [
        Target(
            "submit_c16_vs_baseline",
            "single submit throughput at c16 >= 1.0x baseline",
            ratio(
                lookup(results, "taskplane.submit_c16.rps"),
                lookup(results, "baseline.submit_c16.rps"),
            ),
            1.0,
            True,
            "x",
        ),
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
            "batch submit >= 10,000 jobs/s accepted",
            lookup(results, "taskplane.batch.per_s"),
            10_000.0,
            True,
            "jobs/s",
            batch_note,
        ),
        Target(
            "e2e_vs_baseline",
            "end-to-end jobs/s >= 1.0x baseline",
            ratio(lookup(results, "taskplane.e2e.per_s"), lookup(results, "baseline.e2e.per_s")),
            1.0,
            True,
            "x",
        ),
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
        Target(
            "worker_child_rss",
            "worker child RSS <= 100 MB",
            lookup(results, "taskplane.rss_mb.worker_child"),
            100.0,
            False,
            "MB",
        ),
    ]


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
    return f"{value:,.0f}"


def machine_lines(machine: dict[str, Any]) -> list[str]:
    return [
        f"machine : {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('ram_gb', '?')} GB RAM",
        f"versions: Python {machine.get('python', '?')}, RabbitMQ "
        f"{machine.get('rabbitmq', '?')} (Erlang {machine.get('erlang', '?')}), Redis "
        f"{machine.get('redis', '?')}, Celery {machine.get('celery', '?')}, "
        f"load: {machine.get('load_generator', '?')}",
    ]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in ROWS:
        ceiling = lookup(results, row.ceiling)
        baseline = lookup(results, row.baseline)
        taskplane = lookup(results, row.taskplane)
        rows.append(
            [
                row.label,
                format_value(ceiling, row.kind),
                format_value(baseline, row.kind),
                format_value(taskplane, row.kind),
                format_value(ratio(taskplane, baseline), "x"),
                format_value(ratio(taskplane, ceiling), "x"),
            ]
        )
    return rows


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


def format_table(results: dict[str, Any], targets: Sequence[Target] | None = None) -> str:
    """The whole report: machine header, figures per system with ratios, targets."""
    settings = results.get("settings", {})
    lines = [
        f"Taskplane benchmark: N={settings.get('jobs', '?')} jobs per phase"
        + (" (quick)" if settings.get("quick") else ""),
        *machine_lines(results.get("machine", {})),
        "",
    ]
    header = ["figure", "ceiling", "baseline", "taskplane", "tp/base", "tp/ceil"]
    body = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    lines.append(line(header))
    lines.append("  ".join("-" * w for w in widths))
    lines += [line(r) for r in body]
    lines.append("")
    lines.append(
        "ceiling: c1 = pika publish + wait for each confirm; c16 and batch = pika with a "
        "window of outstanding confirms; drain and end-to-end = pika consume, manual ack."
    )
    workflow = lookup(results, "taskplane.workflow") or {}
    if workflow:
        lines.append(workflow_line(workflow))
    batch = lookup(results, "taskplane.batch") or {}
    if batch.get("available") is False:
        lines.append(f"batch: not available (POST /jobs/batch answered {batch.get('status', '?')})")
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
