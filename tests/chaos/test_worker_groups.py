"""Worker groups on one machine: queues split by config, and failover inside a group.

The chaos platform's own workers consume every queue, so they are stopped for
this module and nodes started with ``TASKPLANE_WORKER_GROUP`` take their
place: the io group (threads) runs webhooks and email, the cpu group
(prefork, one reserved message per process) runs logs, the short group
(prefork, four reserved per process) runs diagnostics. Node names end in
``@%h``, so they are unique per host.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.chaos.conftest import ChaosPlatform
from tests.chaos.harness import EFFECTS_KEY, Submitter, settle, sleep_jobs
from tests.integration.helpers import FINAL, submit
from tests.peers import HttpTarget
from tests.services import Platform, Process, wait_until

pytestmark = pytest.mark.integration

ALL_QUEUE_WORKERS = ("chaos-a", "chaos-b")
PAUSED_KEY = "taskplane:paused-queues"


@pytest.fixture(scope="module")
def chaos_groups(chaos_platform: ChaosPlatform) -> Iterator[ChaosPlatform]:
    """The chaos platform with its all-queue workers stopped, restored (and ready) afterwards."""
    chaos = chaos_platform
    if not chaos.rabbit.is_up():
        chaos.rabbit.start_app()
    if not chaos.redis_node.is_up():
        chaos.redis_node.start()
    chaos.ensure_workers()
    assert not chaos.store.smembers(PAUSED_KEY), "a paused queue would starve the group nodes"
    for name in ALL_QUEUE_WORKERS:
        chaos.workers[name].popen.send_signal(signal.SIGTERM)
    for name in ALL_QUEUE_WORKERS:
        try:
            chaos.workers[name].popen.wait(60)
        except subprocess.TimeoutExpired:
            chaos.workers[name].signal_group(signal.SIGKILL)
            chaos.workers[name].popen.wait(10)
    try:
        yield chaos
    finally:
        _restore_all_queue_workers(chaos)


def _restore_all_queue_workers(chaos: ChaosPlatform) -> None:
    # start_worker waits for " ready." in the worker's log, which is appended
    # to across restarts: wait for a " ready." written after this restart.
    offsets = {name: chaos.workers[name].log_path.stat().st_size for name in ALL_QUEUE_WORKERS}
    chaos.ensure_workers()
    for name, offset in offsets.items():
        worker = chaos.workers[name]
        wait_until(
            lambda w=worker, o=offset: b" ready." in w.log_path.read_bytes()[o:],
            60,
            what=f"{name} to be ready again",
        )


def group_platform(chaos: ChaosPlatform, group: str) -> Platform:
    env = {**chaos.platform.env, "TASKPLANE_WORKER_GROUP": group}
    return Platform(env=env, log_dir=chaos.platform.log_dir)


def start_node(platform: Platform, name: str) -> Process:
    """A node with its group's pool and concurrency (no -c, no -Q)."""
    return platform.start_worker(name, concurrency=None)


def finished(api: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict]:
    """Every job's view once all are final (fails with the unfinished ones otherwise)."""
    views: dict[str, dict] = {}

    def all_final() -> bool:
        for job_id in ids:
            if views.get(job_id, {}).get("state") not in FINAL:
                views[job_id] = api.get(f"/jobs/{job_id}").json()
        return all(v["state"] in FINAL for v in views.values())

    try:
        wait_until(all_final, timeout, 0.1, what="every job to finish")
    except TimeoutError as exc:
        open_jobs = {i: v.get("state") for i, v in views.items() if v.get("state") not in FINAL}
        raise AssertionError(f"{exc}; unfinished: {open_jobs}") from exc
    return views


def test_jobs_run_on_the_worker_group_of_their_queue(chaos_groups):
    chaos = chaos_groups
    run = uuid.uuid4().hex[:4]
    io_platform, cpu_platform = group_platform(chaos, "io"), group_platform(chaos, "cpu")
    short_platform = group_platform(chaos, "short")
    target = HttpTarget().start()
    try:
        io_node = start_node(io_platform, f"io-{run}").node
        cpu_node = start_node(cpu_platform, f"cpu-{run}").node
        short_node = start_node(short_platform, f"short-{run}").node
        path = f"/hooks/ok/{run}"
        with httpx.Client(base_url=chaos.web_url, timeout=10) as api:
            expected: dict[str, str] = {}
            for n in range(6):
                job = submit(api, "webhook.deliver", {"url": target.base + path, "body": {"n": n}})
                expected[job["id"]] = io_node
            for n in range(4):
                lines = [f"2024-01-01T00:00:0{n}Z ERROR boom {n}", "INFO fine"]
                expected[submit(api, "logs.summarize", {"lines": lines})["id"]] = cpu_node
                expected[submit(api, "diagnostics.echo", {"data": n})["id"]] = short_node
            views = finished(api, list(expected), timeout=30)
        for job_id, node in expected.items():
            view = views[job_id]
            assert view["state"] == "succeeded", view
            assert view["worker"] == node, f"{view['type']} ran on {view['worker']}, not {node}"
        assert sorted(r["body"]["n"] for r in target.requests[path]) == list(range(6))
    finally:
        target.stop()
        io_platform.stop_all()
        cpu_platform.stop_all()
        short_platform.stop_all()


def test_a_killed_nodes_jobs_are_finished_by_the_other_node_of_its_group(chaos_groups):
    """The short group reserves four messages per process: the killed node's running
    and reserved jobs all go to the other node, each job's effect happens once."""
    chaos = chaos_groups
    run = uuid.uuid4().hex[:4]
    short = group_platform(chaos, "short")
    try:
        short_1 = start_node(short, f"short-1-{run}")
        short_2 = start_node(short, f"short-2-{run}")
        submitter = Submitter(chaos.web_url, sleep_jobs(40, 0.5), spread_s=4)
        submitter.start()
        submitter.wait_until_fraction(0.5)
        # Kill while every job short-1 runs is inside its 0.5 s sleep, never in the
        # moment between claiming its effect and recording it, so that each
        # in-flight job is rerun on short-2 at once (a claim left behind there
        # would hold its rerun back for one effect lease).
        in_flight = wait_until(
            lambda: mid_sleep_on(chaos, list(submitter.accepted), short_1.node),
            20,
            0.01,
            what=f"{short_1.node} to be in the middle of its jobs",
        )
        short_1.signal_group(signal.SIGKILL)
        short_1.popen.wait(10)
        submitter.join(timeout=60)
        assert not submitter.is_alive() and not submitter.given_up
        ids = submitter.accepted
        assert len(ids) == 40

        seen = settle(chaos.store, ids, timeout=45)
        assert all(state == "succeeded" for state in seen.values()), seen
        records = {i: job_record(chaos, i) for i in ids}
        for job_id in in_flight:
            record = records[job_id]
            assert record["worker"] == short_2.node, (job_id, record)
            assert int(record["attempts"]) >= 2, (job_id, record)
        workers = {r["worker"] for r in records.values()}
        assert workers == {short_1.node, short_2.node}, workers
        effects = chaos.store.hmget(EFFECTS_KEY, ids)
        assert effects == [b"1"] * len(ids), dict(zip(ids, effects, strict=True))
        assert short_2.alive()
    finally:
        short.stop_all()


def mid_sleep_on(chaos: ChaosPlatform, ids: list[str], node: str) -> list[str] | None:
    """The jobs ``node`` runs, if it runs some and all are 0.05-0.35 s into their sleep."""
    pipe = chaos.store.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"taskplane:job:{job_id}", "state", "worker", "started_at")
    rows = pipe.execute()
    now = datetime.now(UTC)
    running = []
    for job_id, (state, worker, started_at) in zip(ids, rows, strict=True):
        if state == b"started" and worker == node.encode():
            elapsed = (now - datetime.fromisoformat(started_at.decode())).total_seconds()
            if not 0.05 <= elapsed <= 0.35:
                return None
            running.append(job_id)
    return running or None


def job_record(chaos: ChaosPlatform, job_id: str) -> dict[str, str]:
    raw = chaos.store.hgetall(f"taskplane:job:{job_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}
