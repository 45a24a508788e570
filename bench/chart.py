"""bench/out/bench.png: the four systems side by side, the webhook job, the backlog.

Top: throughput and latency of the ceiling, the plain baseline, the guarded
baseline and Taskplane (the webhook job's bars beside the no-op job's).
Bottom: Taskplane with an empty queue and with the backlog waiting (rates and
GET latency), and memory per job as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from bench.report import SINK, format_value, lookup, machine_lines  # noqa: E402

COLORS = {
    "ceiling": "#9e9e9e",
    "baseline": "#4c72b0",
    "guarded": "#55a868",
    "taskplane": "#dd8452",
    "empty": "#8172b3",
    "backlog": "#c44e52",
}

# (label, the ceiling's path, each system's path under its own key)
THROUGHPUT = (
    ("submit c1", "ceiling.publish_sync.per_s", "submit_c1.rps"),
    ("submit c16", "ceiling.publish_window.per_s", "submit_c16.rps"),
    ("batch", "ceiling.publish_window.per_s", "batch.per_s"),
    ("worker drain", "ceiling.consume.per_s", "drain.per_s"),
    ("end-to-end c16", "ceiling.consume.per_s", "e2e.per_s"),
    ("webhook submit c16", None, "webhook.submit_c16.rps"),
    ("webhook drain", SINK, "webhook.drain.per_s"),
    ("webhook end-to-end", SINK, "webhook.e2e.per_s"),
    ("workflow steps", None, "workflow.steps_per_s"),
    ("same jobs, plain", None, "workflow.plain_jobs_per_s"),
)
LATENCY = (
    ("submit c1 p50", "ceiling.publish_sync.p50_ms", "submit_c1.p50_ms"),
    ("submit c1 p99", "ceiling.publish_sync.p99_ms", "submit_c1.p99_ms"),
    ("submit c16 p50", None, "submit_c16.p50_ms"),
    ("submit c16 p99", None, "submit_c16.p99_ms"),
    ("webhook submit c16 p99", None, "webhook.submit_c16.p99_ms"),
    ("idle submit->done p50", None, "idle.submit_to_done.p50_ms"),
    ("idle submit->done p99", None, "idle.submit_to_done.p99_ms"),
    ("idle created->started p50", None, "idle.started_minus_created.p50_ms"),
)
# (label, path under taskplane.backlog.empty / .full)
BACKLOG_RATES = (
    ("submit c16 (req/s)", "submit_c16.rps"),
    ("GET /jobs/<id> c16 (req/s)", "get_c16.rps"),
    ("drain, first N (jobs/s)", "drain.per_s"),
)
BACKLOG_LATENCY = (
    ("submit c16 p50", "submit_c16.p50_ms"),
    ("submit c16 p99", "submit_c16.p99_ms"),
    ("GET c16 p50", "get_c16.p50_ms"),
    ("GET c16 p99", "get_c16.p99_ms"),
)


def _series(results: dict[str, Any], rows: tuple) -> dict[str, list[float | None]]:
    series = {"ceiling": [lookup(results, ceiling) for _, ceiling, _ in rows]}
    for system in ("baseline", "guarded", "taskplane"):
        series[system] = [lookup(results, f"{system}.{path}") for _, _, path in rows]
    return series


def _backlog_series(results: dict[str, Any], rows: tuple) -> dict[str, list[float | None]]:
    return {
        "empty": [lookup(results, f"taskplane.backlog.empty.{path}") for _, path in rows],
        "backlog": [lookup(results, f"taskplane.backlog.full.{path}") for _, path in rows],
    }


def _bars(
    axis: Any, labels: list[str], series: dict[str, list], unit: str, log: bool = True
) -> None:
    width = 0.8 / max(1, len(series))
    middle = (len(series) - 1) / 2
    for offset, (name, values) in enumerate(series.items()):
        for index, value in enumerate(values):
            if value is None:
                continue
            x = index + (offset - middle) * width
            axis.bar(x, value, width, color=COLORS[name], label=name)
            axis.annotate(
                f"{value:,.0f}" if value >= 100 else f"{value:.1f}",
                (x, value),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(unit)
    low, high = axis.get_ylim()
    if log:
        axis.set_yscale("log")
        low, high = axis.get_ylim()
        axis.set_ylim(low, high * 4)  # room for the labels above the tallest bars
    else:
        axis.set_ylim(0, high * 1.15)
    axis.grid(axis="y", alpha=0.3)
    handles, names = axis.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    axis.legend(unique.values(), unique.keys(), fontsize=8)


def _memory_text(results: dict[str, Any]) -> str:
    memory = lookup(results, "taskplane.memory") or {}
    queued = lookup(memory, "redis.queued.bytes_per_job")
    finished = lookup(memory, "redis.finished.bytes_per_job")
    queue = lookup(memory, "rabbitmq.queue_bytes_per_job")
    node = lookup(memory, "rabbitmq.node_bytes_per_job")
    return (
        "memory per job (Taskplane): "
        f"Redis {format_value(queued)} B queued, {format_value(finished)} B finished; "
        f"RabbitMQ {format_value(queue)} B in the quorum queue, {format_value(node)} B of the node"
    )


def draw(results: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(
        2, 2, figsize=(16, 11), gridspec_kw={"height_ratios": [3, 2], "width_ratios": [3, 2]}
    )
    (rates, latency), (backlog_rates, backlog_latency) = axes
    _bars(rates, [r[0] for r in THROUGHPUT], _series(results, THROUGHPUT), "per second (log)")
    rates.set_title("throughput (higher is better); webhook ceiling: the HTTP sink")
    _bars(latency, [r[0] for r in LATENCY], _series(results, LATENCY), "milliseconds (log)")
    latency.set_title("latency (lower is better)")
    size = lookup(results, "taskplane.backlog.size") or lookup(results, "settings.backlog")
    waiting = f"{size:,} waiting" if isinstance(size, int) else "backlog"
    _bars(
        backlog_rates,
        [r[0] for r in BACKLOG_RATES],
        _backlog_series(results, BACKLOG_RATES),
        "per second",
        log=False,
    )
    backlog_rates.set_title(f"Taskplane: empty queue vs {waiting} (higher is better)")
    _bars(
        backlog_latency,
        [r[0] for r in BACKLOG_LATENCY],
        _backlog_series(results, BACKLOG_LATENCY),
        "milliseconds",
        log=False,
    )
    backlog_latency.set_title(f"Taskplane: empty queue vs {waiting} (lower is better)")
    settings = results.get("settings", {})
    figure.suptitle(
        f"Taskplane benchmark, N={settings.get('jobs')}, webhook jobs "
        f"{settings.get('webhook_jobs')}\n"
        + " | ".join(machine_lines(results.get("machine", {})))
        + "\n"
        + _memory_text(results),
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
