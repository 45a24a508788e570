"""bench/out/bench.png: throughput and latency, baseline vs Taskplane, ceiling where it applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from bench.report import lookup, machine_lines  # noqa: E402

COLORS = {"ceiling": "#9e9e9e", "baseline": "#4c72b0", "taskplane": "#dd8452"}

THROUGHPUT = (
    ("submit c1", "ceiling.publish_sync.per_s", "submit_c1.rps"),
    ("submit c16", "ceiling.publish_window.per_s", "submit_c16.rps"),
    ("batch", "ceiling.publish_window.per_s", "batch.per_s"),
    ("worker drain", "ceiling.consume.per_s", "drain.per_s"),
    ("end-to-end c16", "ceiling.consume.per_s", "e2e.per_s"),
    ("workflow steps", None, "workflow.steps_per_s"),
    ("same jobs, plain", None, "workflow.plain_jobs_per_s"),
)
LATENCY = (
    ("submit c1 p50", "ceiling.publish_sync.p50_ms", "submit_c1.p50_ms"),
    ("submit c1 p99", "ceiling.publish_sync.p99_ms", "submit_c1.p99_ms"),
    ("submit c16 p50", None, "submit_c16.p50_ms"),
    ("submit c16 p99", None, "submit_c16.p99_ms"),
    ("idle submit->done p50", None, "idle.submit_to_done.p50_ms"),
    ("idle submit->done p99", None, "idle.submit_to_done.p99_ms"),
    ("idle created->started p50", None, "idle.started_minus_created.p50_ms"),
)


def _series(results: dict[str, Any], rows: tuple) -> dict[str, list[float | None]]:
    return {
        "ceiling": [lookup(results, ceiling) for _, ceiling, _ in rows],
        "baseline": [lookup(results, f"baseline.{path}") for _, _, path in rows],
        "taskplane": [lookup(results, f"taskplane.{path}") for _, _, path in rows],
    }


def _bars(axis: Any, labels: list[str], series: dict[str, list], unit: str) -> None:
    width = 0.27
    for offset, (name, values) in enumerate(series.items()):
        for index, value in enumerate(values):
            if value is None:
                continue
            x = index + (offset - 1) * width
            axis.bar(x, value, width, color=COLORS[name], label=name)
            axis.annotate(
                f"{value:,.0f}" if value >= 100 else f"{value:.1f}",
                (x, value),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(unit)
    axis.set_yscale("log")
    low, high = axis.get_ylim()
    axis.set_ylim(low, high * 4)  # room for the labels above the tallest bars
    axis.grid(axis="y", alpha=0.3)
    handles, names = axis.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    axis.legend(unique.values(), unique.keys(), fontsize=8)


def draw(results: dict[str, Any], path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    _bars(left, [r[0] for r in THROUGHPUT], _series(results, THROUGHPUT), "per second (log)")
    left.set_title("throughput (higher is better)")
    _bars(right, [r[0] for r in LATENCY], _series(results, LATENCY), "milliseconds (log)")
    right.set_title("latency (lower is better)")
    settings = results.get("settings", {})
    figure.suptitle(
        f"Taskplane benchmark, N={settings.get('jobs')}\n"
        + " | ".join(machine_lines(results.get("machine", {}))),
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
