"""The chaos suite: break workers, the broker and Redis under a stream of jobs.

Every scenario prints ``accepted, succeeded, failed, lost, duplicated_effects,
seconds``; lost and duplicated_effects must be 0.
"""

import os
import signal
import subprocess
import time

import httpx
import pytest

from tests.chaos.conftest import CHAOS_JOBS
from tests.chaos.harness import Submitter, account, sleep_jobs, states
from tests.integration.helpers import submit_until_accepted, wait_for_state
from tests.services import wait_until

pytestmark = pytest.mark.chaos


def run_stream(chaos, jobs, breakage, scenario, spread_s=0, settle_timeout=240):
    started = time.monotonic()
    submitter = Submitter(chaos.web_url, jobs, spread_s=spread_s)
    submitter.start()
    breakage(submitter)
    submitter.join(timeout=600)
    assert not submitter.is_alive(), "the submitter never finished"
    return account(scenario, chaos.store, submitter, started, settle_timeout)


def assert_kept_promises(outcome, failed=0):
    assert outcome.accepted > 0
    assert outcome.lost == 0, outcome.notes
    assert outcome.duplicated_effects == 0
    assert outcome.failed == failed, outcome.notes
    assert outcome.index_mismatches == 0, outcome.notes


def pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_1_kill_a_whole_worker_five_times(chaos, record_outcome):
    def breakage(submitter):
        for n in range(5):
            submitter.wait_until_fraction((n + 1) / 7)
            victim = "chaos-a" if n % 2 == 0 else "chaos-b"
            chaos.workers[victim].signal_group(signal.SIGKILL)
            chaos.workers[victim].popen.wait(10)
            chaos.start_worker(victim)  # like a supervisor would

    outcome = record_outcome(
        run_stream(chaos, sleep_jobs(CHAOS_JOBS, 0.3), breakage, "1 kill -9 worker x5", spread_s=15)
    )
    assert_kept_promises(outcome)


def test_2_kill_only_a_pool_child(chaos, record_outcome):
    def breakage(submitter):
        for n in range(5):
            submitter.wait_until_fraction((n + 1) / 7)
            children = pool_children(chaos.workers["chaos-a"].pid)
            if children:
                os.kill(children[0], signal.SIGKILL)

    outcome = record_outcome(
        run_stream(
            chaos, sleep_jobs(CHAOS_JOBS, 0.3), breakage, "2 kill -9 pool child x5", spread_s=12
        )
    )
    assert_kept_promises(outcome)


def test_3_restart_rabbitmq_twice(chaos, record_outcome):
    def breakage(submitter):
        for n in range(2):
            submitter.wait_until_fraction((n + 1) / 3)
            chaos.rabbit.restart()

    outcome = record_outcome(
        run_stream(
            chaos, sleep_jobs(CHAOS_JOBS, 0.05), breakage, "3 restart RabbitMQ x2", spread_s=20
        )
    )
    assert_kept_promises(outcome)
    # Workers consume again after the reconnect (celery#8030): a fresh job runs.
    _assert_fresh_job_runs(chaos)


def test_4_restart_redis(chaos, record_outcome):
    def breakage(submitter):
        submitter.wait_until_fraction(0.3)
        chaos.redis_node.restart(down_for=3)

    outcome = record_outcome(
        run_stream(chaos, sleep_jobs(CHAOS_JOBS, 0.05), breakage, "4 restart Redis", spread_s=10)
    )
    assert_kept_promises(outcome)
    _assert_fresh_job_runs(chaos)


def test_5_poison_job_is_dead_lettered_and_others_flow(chaos, record_outcome):
    jobs = sleep_jobs(CHAOS_JOBS // 2, 0.05)
    jobs.insert(len(jobs) // 4, {"type": "diagnostics.crash", "payload": {}})
    outcome = record_outcome(
        run_stream(chaos, jobs, lambda submitter: None, "5 poison job", spread_s=5)
    )
    assert_kept_promises(outcome, failed=1)  # the poison job, and only it
    with httpx.Client(base_url=chaos.web_url) as api:
        dead = api.get("/queues/diagnostics/dead?limit=500").json()["items"]
    assert [d["reason"] for d in dead if d["type"] == "diagnostics.crash"] == ["delivery_limit"]


def test_6_sigterm_a_worker_during_long_jobs(chaos, record_outcome):
    def breakage(submitter):
        submitter.wait_until_fraction(1.0)
        time.sleep(1.0)  # both workers are in the middle of 3-second jobs
        victim = chaos.workers["chaos-a"]
        victim.popen.send_signal(signal.SIGTERM)
        victim.popen.wait(60)  # warm shutdown: running jobs finish, the rest go back

    outcome = record_outcome(
        run_stream(chaos, sleep_jobs(12, 3.0), breakage, "6 SIGTERM during long jobs")
    )
    assert_kept_promises(outcome)


def test_7_countdown_does_not_hold_back_immediate_jobs(chaos, record_outcome):
    with httpx.Client(base_url=chaos.web_url, timeout=10) as api:
        started = time.monotonic()
        delayed = [
            api.post(
                "/jobs",
                json={
                    "type": "diagnostics.sleep",
                    "delay_s": 8,
                    "payload": {"seconds": 0, "effect": True},
                },
            ).json()
            for _ in range(8)
        ]
        submitter = Submitter(chaos.web_url, sleep_jobs(20, 0))
        submitter.run()
        wait_until(
            lambda: all(s == "succeeded" for s in states(chaos.store, submitter.accepted).values()),
            6,
            0.1,
            what="immediate jobs to finish while delayed ones wait",
        )
        immediate_done = time.monotonic() - started
        assert all(
            s == "scheduled" for s in states(chaos.store, [d["id"] for d in delayed]).values()
        )
        submitter.accepted += [d["id"] for d in delayed]
        outcome = record_outcome(
            account("7 countdown vs immediate", chaos.store, submitter, started, settle_timeout=30)
        )
    assert immediate_done < 6
    assert_kept_promises(outcome)


def _assert_fresh_job_runs(chaos):
    with httpx.Client(base_url=chaos.web_url, timeout=10) as api:
        wait_for_state(api, submit_until_accepted(api, timeout=30), "succeeded", 30)
