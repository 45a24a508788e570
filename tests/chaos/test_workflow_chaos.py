"""Workflows through kill -9: a stream of 1 -> 10 -> 1 workflows while workers die.

Each workflow echoes ten numbers, fans out to ten ``webhook.deliver`` steps (one
per number) posting to a real HTTP receiver in this test, and fans in with a
``diagnostics.sum`` over the statuses they got back (the receiver answers
``200 + n``, so the sum also shows the fan-in saw every item, in item order).
Workers are killed with ``kill -9`` five times during the stream and restarted,
as a supervisor would. Afterwards every workflow must have succeeded, every
fan-out step must have delivered exactly once (the receiver counts requests per
``Idempotency-Key``, which is the job id), every workflow must have exactly its
twelve step jobs (ids ``step_job_id(...)``, none twice), and every fan-in's
result must be right.

Workflows are created with ``POST /workflows``, retried on 503 like any client.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tasks.core.workflows import PREFIX, step_job_id
from tests.chaos.conftest import CHAOS_JOBS
from tests.chaos.harness import Outcome, Submitter, attempts
from tests.services import free_port

pytestmark = pytest.mark.chaos

FAN = 10
STEPS_PER_WORKFLOW = FAN + 2
# 20 workflows (240 jobs) at the CI size of 120, 200 (2,400 jobs) with make chaos.
WORKFLOWS = min(200, max(20, CHAOS_JOBS // 6))
KILLS = 5
SETTLE_S = 240
FINAL = {"succeeded", "failed", "cancelled"}


class Receiver:
    """A real HTTP server that applies each delivery once per Idempotency-Key.

    As webhook receivers do (the platform sends the job id as the key, so that
    they can): the first request with a key applies the effect, a repeat gets the
    same answer without applying it again. Delivery itself is at least once: a
    worker killed after the receiver got the request and before it recorded the
    answer delivers again after its claim lapses (tasks/runtime/effects.py).
    ``deliveries`` counts requests per key, ``applied`` effects per workflow item;
    an item applied twice (under two keys: two jobs for one step) is a duplicate.
    It answers ``200 + n`` for a body ``{"n": n, ...}``, so each fan-out step's
    result carries its item.
    """

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.applied: Counter[tuple[int, int]] = Counter()
        self.bodies: dict[str, Any] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                key = self.headers.get("Idempotency-Key") or "?"
                with receiver.lock:
                    receiver.deliveries[key] += 1
                    if key not in receiver.bodies:  # a repeated key is not applied again
                        receiver.bodies[key] = body
                        receiver.applied[(body["workflow"], body["n"])] += 1
                self.send_response(200 + int(body["n"]))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/fan"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def workflow_body(number: int, url: str) -> dict[str, Any]:
    return {
        "steps": [
            {"id": "numbers", "type": "diagnostics.echo", "payload": {"data": list(range(FAN))}},
            {
                "id": "fan",
                "type": "webhook.deliver",
                "depends_on": ["numbers"],
                "map": {"$result": "numbers", "path": "data"},
                "payload": {"url": url, "body": {"workflow": number, "n": {"$item": ""}}},
            },
            {
                "id": "sum",
                "type": "diagnostics.sum",
                "depends_on": ["fan"],
                "payload": {"values": {"$result": "fan", "path": "*.status_code"}},
            },
        ]
    }


EXPECTED_SUM = {"sum": sum(200 + n for n in range(FAN)), "count": FAN}


def workflow_states(store: Any, ids: list[str]) -> dict[str, str | None]:
    pipe = store.pipeline(transaction=False)
    for workflow_id in ids:
        pipe.hget(PREFIX + workflow_id, "state")
    return {
        workflow_id: (s.decode() if s else None)
        for workflow_id, s in zip(ids, pipe.execute(), strict=True)
    }


def step_jobs_by_workflow(store: Any, ids: set[str]) -> dict[str, list[str]]:
    """Every job record tagged with one of ``ids``: workflow id -> job ids."""
    keys = list(store.scan_iter(match="taskplane:job:*", count=1000, _type="hash"))
    pipe = store.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "tags")
    found: dict[str, list[str]] = {workflow_id: [] for workflow_id in ids}
    for key, tags in zip(keys, pipe.execute(), strict=True):
        workflow_id = json.loads(tags or "{}").get("workflow")
        if workflow_id in found:
            found[workflow_id].append(key.decode().removeprefix("taskplane:job:"))
    return found


def expected_jobs(workflow_id: str) -> set[str]:
    return {
        step_job_id(workflow_id, "numbers"),
        step_job_id(workflow_id, "sum"),
        *(step_job_id(workflow_id, "fan", n) for n in range(FAN)),
    }


@pytest.mark.timeout(600)  # about 200 s at the full size of 200 workflows, more on a busy machine
def test_8_workflows_through_kill_9_of_workers(chaos, record_outcome) -> None:
    receiver = Receiver()
    bodies = [workflow_body(n, receiver.url) for n in range(WORKFLOWS)]
    killed: list[str] = []
    try:
        started = time.monotonic()
        submitter = Submitter(
            chaos.web_url, bodies, spread_s=max(15.0, WORKFLOWS * 0.3), path="/workflows"
        )
        submitter.start()
        for n in range(KILLS):
            submitter.wait_until_fraction((n + 1) / (KILLS + 2))
            victim = "chaos-a" if n % 2 == 0 else "chaos-b"
            chaos.workers[victim].signal_group(signal.SIGKILL)
            chaos.workers[victim].popen.wait(10)
            killed.append(f"{victim} at {len(submitter.accepted)} workflows")
            chaos.start_worker(victim)  # like a supervisor would
        submitter.join(timeout=600)
        assert not submitter.is_alive(), "the submitter never finished"
        ids = list(submitter.accepted)

        deadline = time.monotonic() + SETTLE_S
        while True:
            seen = workflow_states(chaos.store, ids)
            if all(s in FINAL for s in seen.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        seconds = round(time.monotonic() - started, 1)
        time.sleep(1)  # a delivery still in flight would show up too
    finally:
        receiver.stop()

    notes: list[str] = [f"killed {killed}"]
    by_workflow = step_jobs_by_workflow(chaos.store, set(ids))
    wrong_jobs = {
        w: jobs for w, jobs in by_workflow.items() if sorted(jobs) != sorted(expected_jobs(w))
    }
    fan_keys = {step_job_id(w, "fan", n) for w in ids for n in range(FAN)}
    counts = dict(receiver.deliveries)
    missing = sorted(fan_keys - set(counts))
    redelivered = sorted(k for k, c in counts.items() if c > 1)
    doubled = sorted(item for item, c in receiver.applied.items() if c > 1)
    strangers = sorted(set(counts) - fan_keys)
    wrong_bodies = [k for k in fan_keys & set(counts) if receiver.bodies[k]["n"] not in range(FAN)]
    with httpx.Client(base_url=chaos.web_url, timeout=30) as client:
        views = {w: client.get(f"/workflows/{w}").json() for w in ids}
    sums = {w: {s["id"]: s for s in v["steps"]}["sum"]["result"] for w, v in views.items()}
    wrong_sums = {w: r for w, r in sums.items() if r != EXPECTED_SUM}
    step_ids = sorted(j for jobs in by_workflow.values() for j in jobs)
    reruns = sum(1 for a in attempts(chaos.store, step_ids) if a > 1)

    not_final = [w for w, s in seen.items() if s not in FINAL]
    # Lost: not final, or final with a fan-out step that never delivered.
    undelivered = set(missing)
    lost = [
        w
        for w in ids
        if seen[w] not in FINAL or any(step_job_id(w, "fan", n) in undelivered for n in range(FAN))
    ]
    if not_final:
        notes.append(
            f"not final: {not_final[:5]} "
            + str({w: {s["id"]: s["state"] for s in views[w]["steps"]} for w in not_final[:3]})
        )
    if missing:
        notes.append(f"{len(missing)} fan-out steps never delivered, e.g. {missing[:5]}")
    if doubled:
        notes.append(f"effects applied more than once (two jobs of one step): {doubled[:5]}")
    if redelivered:  # at least once to the receiver; applied once thanks to the key
        notes.append(f"{len(redelivered)} deliveries repeated under their key (applied once)")
    if wrong_bodies:
        notes.append(f"deliveries with a body not of their step: {wrong_bodies[:5]}")
    if strangers:
        notes.append(f"deliveries of jobs no accepted workflow has: {strangers[:5]}")
    if wrong_jobs:
        notes.append(
            f"workflows without exactly their 12 step jobs: {list(wrong_jobs.items())[:3]}"
        )
    if wrong_sums:
        notes.append(f"wrong fan-in results: {list(wrong_sums.items())[:3]}")
    if submitter.given_up:
        notes.append(f"{submitter.given_up} workflows never accepted")
    outcome = record_outcome(
        Outcome(
            scenario="8 workflows 1-10-1 kill x5",
            accepted=len(ids),
            succeeded=sum(1 for s in seen.values() if s == "succeeded"),
            failed=sum(1 for s in seen.values() if s == "failed"),
            lost=len(lost),
            duplicated_effects=len(doubled),
            seconds=seconds,
            rejected_submits=submitter.rejected,
            reruns=reruns,
            notes=notes,
        )
    )
    assert len(ids) == WORKFLOWS and not submitter.given_up, outcome.notes
    assert outcome.succeeded == WORKFLOWS, outcome.notes
    assert {w: v["state"] for w, v in views.items()} == dict.fromkeys(ids, "succeeded")
    assert not missing and not doubled and not strangers and not wrong_bodies, outcome.notes
    assert len(counts) == WORKFLOWS * FAN, outcome.notes
    assert receiver.applied == Counter({(w, n): 1 for w in range(WORKFLOWS) for n in range(FAN)})
    assert not wrong_jobs, outcome.notes
    assert len(step_ids) == len(set(step_ids)) == WORKFLOWS * STEPS_PER_WORKFLOW
    assert not wrong_sums, outcome.notes
