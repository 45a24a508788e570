"""deploy/prometheus/: the alerting rules, the scrape config and the rules' unit tests.

promtool checks the syntax of both files and runs alerts_test.yml, where every
alert is made to fire (and some neighbours must not). The YAML-level tests need
no promtool: every alert carries for/severity/summary/description, the alerts
the runbook relies on exist, and the expressions use only metric names that the
web, Flower and Prometheus really expose.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from tests.services import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"

REQUIRED_ALERTS = {
    "TaskplaneJobRuntimeP99High",
    "TaskplaneDeadLettersGrowing",
    "TaskplaneQueueWithoutConsumers",
    "TaskplaneQueueBackingUp",
    "TaskplaneWorkerGone",
    "TaskplanePublishFailures",
    "TaskplaneWebDown",
    "TaskplaneBrokerBlocked",
    "TaskplaneRequestDeadlinesExceeded",
    "TaskplaneNoSchedulerLeader",
}

# What the services expose (app/metrics.py; flower/events.py of Flower 2.2).
KNOWN_METRICS = {
    "taskplane_http_requests_total",
    "taskplane_http_request_duration_seconds_bucket",
    "taskplane_http_request_duration_seconds_count",
    "taskplane_http_request_duration_seconds_sum",
    "taskplane_jobs_submitted_total",
    "taskplane_publish_failures_total",
    "taskplane_queue_messages",
    "taskplane_queue_consumers",
    "taskplane_queue_paused",
    "taskplane_broker_blocked",
    "taskplane_request_deadline_exceeded_total",
    "taskplane_scheduler_leader_heartbeat_timestamp_seconds",
    "taskplane_schedule_fires_total",
    "taskplane_schedule_fire_lag_seconds_bucket",
    "flower_events_total",
    "flower_task_runtime_seconds_bucket",
    "flower_task_runtime_seconds_count",
    "flower_task_runtime_seconds_sum",
    "flower_task_prefetch_time_seconds",
    "flower_worker_prefetched_tasks",
    "flower_worker_online",
    "flower_worker_number_of_currently_executing_tasks",
}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed: run scripts/ensure-test-tools.sh as root"
)


def promtool(*args: str) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"promtool {' '.join(args)} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


@needs_promtool
def test_alert_rules_pass_promtool_check():
    promtool("check", "rules", str(ALERTS.relative_to(ROOT)))


@needs_promtool
def test_scrape_config_passes_promtool_check():
    promtool("check", "config", str(CONFIG.relative_to(ROOT)))


@needs_promtool
def test_alert_rule_unit_tests_pass():
    promtool("test", "rules", str(ALERTS_TEST.relative_to(ROOT)))


@cache
def _load(path: str) -> Any:
    return yaml.safe_load((PROMETHEUS_DIR / path).read_text())


def _alerts() -> list[dict[str, Any]]:
    return [r for g in _load("alerts.yml")["groups"] for r in g["rules"] if "alert" in r]


def test_the_taskplane_group_has_every_required_alert_once():
    groups = {g["name"]: g for g in _load("alerts.yml")["groups"]}
    assert "taskplane" in groups
    names = [r["alert"] for r in groups["taskplane"]["rules"] if "alert" in r]
    assert REQUIRED_ALERTS <= set(names), f"missing: {sorted(REQUIRED_ALERTS - set(names))}"
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_every_alert_has_for_severity_summary_and_description(rule: dict[str, Any]):
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "needs a for: duration"
    assert rule.get("labels", {}).get("severity") in {"warning", "critical"}
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip(), "needs a summary"
    # What to do, not only what happened: long enough to name a next step.
    assert len(annotations.get("description", "")) > 80, "needs a description that guides"


def test_the_annotations_point_operators_at_the_taskplane_endpoints():
    text = " ".join(a["annotations"]["description"] for a in _alerts())
    for endpoint in ("/dead", "/dead/replay", "/resume"):
        pattern = r"/queues/(?:<queue>|\{\{ \$labels\.queue \}\})" + re.escape(endpoint)
        assert re.search(pattern, text), endpoint


def test_the_expressions_use_only_metrics_the_services_expose():
    used = {
        name
        for rule in _alerts()
        for name in re.findall(r"\b(?:taskplane|flower)_[a-z_]+\b", rule["expr"])
    }
    assert used, "no taskplane_/flower_ metric found in any expression"
    assert used <= KNOWN_METRICS, f"unknown metric names: {sorted(used - KNOWN_METRICS)}"


def test_the_scrape_config_scrapes_web_flower_and_rabbitmq():
    config = _load("prometheus.yml")
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {
        job["job_name"]: (job.get("metrics_path", "/metrics"), job["static_configs"][0]["targets"])
        for job in config["scrape_configs"]
    }
    assert jobs["taskplane-web"] == ("/metrics", ["127.0.0.1:8000"])
    assert jobs["flower"] == ("/metrics", ["127.0.0.1:5555"])
    assert jobs["rabbitmq"] == ("/metrics", ["127.0.0.1:15692"])
    assert jobs["rabbitmq-per-object"] == ("/metrics/per-object", ["127.0.0.1:15692"])
    # TaskplaneWebDown and TaskplaneWorkerGone match on these job names.
    alerts = {a["alert"]: a["expr"] for a in _alerts()}
    assert 'job="taskplane-web"' in alerts["TaskplaneWebDown"]
    assert 'job="flower"' in alerts["TaskplaneWorkerGone"]


def test_every_alert_is_made_to_fire_by_the_unit_tests():
    fired = {
        case["alertname"]
        for test in _load("alerts_test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {a["alert"] for a in _alerts()} <= fired
