"""Submit a stream of jobs like a real client, break things, and count what happened.

The client retries a submission on 503 or a refused connection (as the API
asks with Retry-After), so only 202-accepted jobs count as promises. After
the breakage, every accepted job must reach a final state and every effect
must have happened exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

EFFECTS_KEY = "taskplane:diagnostics:effects"
FINAL = {"succeeded", "failed", "cancelled"}
COLUMNS = ("scenario", "accepted", "succeeded", "failed", "lost", "duplicated_effects", "seconds")


@dataclass
class Outcome:
    scenario: str
    accepted: int
    succeeded: int
    failed: int
    lost: int
    duplicated_effects: int
    seconds: float
    rejected_submits: int = 0
    reruns: int = 0
    # Jobs whose search-index entries disagree with their records.
    index_mismatches: int = 0
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        return (
            f"{self.scenario:<28} {self.accepted:>8} {self.succeeded:>9} {self.failed:>6} "
            f"{self.lost:>4} {self.duplicated_effects:>18} {self.seconds:>8.1f} "
            f"{self.reruns:>7} {self.rejected_submits:>6} {self.index_mismatches:>7}"
        )


def header() -> str:
    """The required columns, then two that show the breakage bit: jobs that ran more
    than once (interrupted and redelivered) and submissions answered 503; and jobs
    whose search-index entries disagree with their records (must be 0)."""
    return (
        f"{'scenario':<28} {'accepted':>8} {'succeeded':>9} {'failed':>6} {'lost':>4} "
        f"{'duplicated_effects':>18} {'seconds':>8} {'reruns':>7} {'503s':>6} {'index':>7}"
    )


class Submitter(threading.Thread):
    """Submits ``jobs`` one after another, retrying each until accepted (or its deadline).

    ``path`` is where they go: ``/jobs``, or ``/workflows`` for workflow bodies.
    """

    def __init__(
        self,
        base_url: str,
        jobs: list[dict[str, Any]],
        per_job_deadline: float = 90,
        spread_s: float = 0,
        path: str = "/jobs",
    ):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.path = path
        self.jobs = jobs
        # Pace the stream over this many seconds so it spans the breakage.
        self.interval = spread_s / max(len(jobs), 1)
        self.per_job_deadline = per_job_deadline
        self.accepted: list[str] = []
        self.rejected = 0
        self.given_up = 0
        self.progress = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            started = time.monotonic()
            for n, job in enumerate(self.jobs):
                time.sleep(max(0.0, started + n * self.interval - time.monotonic()))
                self._submit(client, job)
                if len(self.accepted) >= max(1, len(self.jobs) // 10):
                    self.progress.set()
        self.progress.set()

    def _submit(self, client: httpx.Client, job: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.per_job_deadline
        while time.monotonic() < deadline:
            try:
                response = client.post(self.path, json=job)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 202:
                self.accepted.append(response.json()["id"])
                return
            if response is not None and response.status_code != 503:
                raise AssertionError(f"unexpected {response.status_code}: {response.text}")
            if response is not None:
                assert "Retry-After" in response.headers
            self.rejected += 1
            time.sleep(0.2)
        self.given_up += 1

    def wait_until_fraction(self, fraction: float, timeout: float = 120) -> None:
        target = int(len(self.jobs) * fraction)
        deadline = time.monotonic() + timeout
        while len(self.accepted) < target and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def attempts(store: redis.Redis, ids: list[str]) -> list[int]:
    pipe = store.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"taskplane:job:{job_id}", "attempts")
    return [int(a or 0) for a in pipe.execute()]


def states(store: redis.Redis, ids: list[str]) -> dict[str, str | None]:
    pipe = store.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"taskplane:job:{job_id}", "state")
    return {
        job_id: (s.decode() if s else None) for job_id, s in zip(ids, pipe.execute(), strict=True)
    }


def settle(store: redis.Redis, ids: list[str], timeout: float) -> dict[str, str | None]:
    """Wait until every job is final (or the timeout); returns the last states seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = states(store, ids)
        if all(state in FINAL for state in seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def account(
    scenario: str,
    store: redis.Redis,
    submitter: Submitter,
    started: float,
    settle_timeout: float = 180,
    effects_expected: bool = True,
) -> Outcome:
    """Count the outcome of every accepted job; effects must happen exactly once."""
    ids = submitter.accepted
    seen = settle(store, ids, settle_timeout)
    counts = {k.decode(): int(v) for k, v in store.hgetall(EFFECTS_KEY).items()}
    succeeded = [i for i, s in seen.items() if s == "succeeded"]
    lost = [i for i, s in seen.items() if s not in FINAL]
    notes = []
    if effects_expected:
        missing_effect = [i for i in succeeded if counts.get(i, 0) == 0]
        if missing_effect:
            notes.append(f"succeeded without their effect: {missing_effect[:5]}")
        lost += missing_effect
    duplicated = [i for i in ids if counts.get(i, 0) > 1]
    if duplicated:
        notes.append(f"effects more than once: {duplicated[:5]}")
    if submitter.given_up:
        notes.append(f"{submitter.given_up} submissions never accepted")
    mismatched = index_mismatches(store, ids)
    if mismatched:
        notes.append(f"index disagrees with records: {mismatched[:5]}")
    return Outcome(
        scenario=scenario,
        accepted=len(ids),
        succeeded=len(succeeded),
        failed=sum(1 for s in seen.values() if s == "failed"),
        lost=len(lost),
        duplicated_effects=sum(1 for i in ids if counts.get(i, 0) > 1),
        seconds=round(time.monotonic() - started, 1),
        rejected_submits=submitter.rejected,
        reruns=sum(1 for n in attempts(store, ids) if n > 1),
        index_mismatches=len(mismatched),
        notes=notes + [f"not final: {lost[:5]} states {[seen.get(i) for i in lost[:5]]}"]
        if lost
        else notes,
    )


STATES = ("queued", "scheduled", "started", "retrying", "succeeded", "failed", "cancelled")


def index_mismatches(store: redis.Redis, ids: list[str]) -> list[str]:
    """Jobs not in exactly their record's state index (tasks/core/jobstore, _INDEX_LIB),
    or missing from the index of all jobs."""
    seen = states(store, ids)
    pipe = store.pipeline(transaction=False)
    for job_id in ids:
        pipe.zscore("taskplane:ix:all", job_id)
        for state in STATES:
            pipe.zscore(f"taskplane:ix:state:{state}", job_id)
    replies = pipe.execute()
    wrong = []
    width = 1 + len(STATES)
    for n, job_id in enumerate(ids):
        row = replies[n * width : (n + 1) * width]
        indexed = {state for state, score in zip(STATES, row[1:], strict=True) if score}
        if row[0] is None or indexed != {seen[job_id]}:
            wrong.append(f"{job_id}: record {seen[job_id]}, indexed {sorted(indexed)}")
    # The counts behind GET /jobs/stats agree with the state indexes they summarise.
    counts: dict[str, int] = {}
    for name, value in store.hgetall("taskplane:ix:counts").items():
        state = name.decode().rpartition("\t")[2]
        counts[state] = counts.get(state, 0) + int(value)
    for state in STATES:
        size = store.zcard(f"taskplane:ix:state:{state}")
        if counts.get(state, 0) != size:
            wrong.append(f"counts say {counts.get(state, 0)} {state}, its index holds {size}")
    return wrong


def sleep_jobs(count: int, seconds: float) -> list[dict[str, Any]]:
    return [
        {"type": "diagnostics.sleep", "payload": {"seconds": seconds, "effect": True}}
        for _ in range(count)
    ]


def repeat(times: int, interval: float, action: Callable[[int], None]) -> None:
    for n in range(times):
        time.sleep(interval)
        action(n)
