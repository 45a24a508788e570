"""Bounded answers while RabbitMQ or Redis is up but not serving (issue 10).

A crashed broker refuses connections and the web answers 503 at once (test_outages.py).
These faults are different: a memory alarm blocks every publishing connection, a
SIGSTOPped node or Redis accepts bytes and never answers, a full Redis refuses writes.
Each test measures every request's wall time against the documented bound, and checks
that every job that got a 202 reaches a final state once the fault is gone.

The module builds a platform of its own (RabbitMQ node, Redis, one gunicorn, one
worker) with the short timeouts the bounds are stated for, so freezing its nodes
disturbs no other test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.integration.helpers import FINAL, assert_error
from tests.isolated import RabbitNode, RedisNode, kill, scratch_dir
from tests.services import VENV_BIN, Platform, Process, wait_until

# Like the rest of the chaos suite: make test installs the servers and runs as root;
# without them these fail rather than skip.
pytestmark = pytest.mark.integration

# The settings the platform runs with, and the bounds the contract derives from them.
CONFIRM_TIMEOUT_S = 3.0
REDIS_TIMEOUT_S = 1.0
DEADLINE_MARGIN_S = 0.5  # the documented margin on top of each timeout
SLACK_S = 0.5  # a loaded CI machine, not part of the contract
HEALTH_TIMEOUT_S = 0.8  # taskplane_health_timeout_s: every readiness check within it
READY_BOUND_S = HEALTH_TIMEOUT_S + SLACK_S
REDIS_BOUND_S = REDIS_TIMEOUT_S + DEADLINE_MARGIN_S + SLACK_S
# While the web knows the broker is blocked it does not wait for a confirm at all.
AT_ONCE_S = 1.5
ALARM_WATERMARK = "0.00001"
NORMAL_WATERMARK = "0.4"
FILLER_PREFIX = "tp-test:filler:"
ECHO = {"type": "diagnostics.echo", "payload": {}}
BLOCKED_GAUGE = re.compile(r"^taskplane_broker_blocked(?:\{[^}]*\})?\s+(\S+)$", re.MULTILINE)


def submit_bound(jobs: int = 1) -> float:
    """POST /jobs (one job) or POST /jobs/batch (n jobs) answers within this."""
    return CONFIRM_TIMEOUT_S + (jobs - 1) / 50 + DEADLINE_MARGIN_S + SLACK_S


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (a prefork worker's pool processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in children.split()]


def proc_state(pid: int) -> str:
    """The one-letter state in /proc/<pid>/stat ("T" when stopped); "" when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@dataclass
class FaultPlatform:
    rabbit: RabbitNode
    redis_node: RedisNode
    platform: Platform
    web: Process
    web_url: str
    worker: Process
    store: redis.Redis
    frozen: set[int] = field(default_factory=set)

    # -- faults -----------------------------------------------------------------

    def freeze(self, pids: list[int]) -> None:
        """SIGSTOP ``pids`` and wait until the kernel shows each one stopped."""
        assert pids, "nothing to freeze"
        self.frozen.update(pids)
        for pid in pids:
            kill(pid, signal.SIGSTOP)
        wait_until(
            lambda: all(proc_state(pid) in ("T", "") for pid in pids), 5, what=f"{pids} stopped"
        )

    def thaw(self) -> None:
        """SIGCONT everything this module ever froze (a no-op for running processes)."""
        for pid in [*self.frozen, *self.rabbit.pids(), self.redis_node._pid()]:
            if pid:
                kill(pid, signal.SIGCONT)
        self.frozen.clear()

    def alarm_on(self) -> None:
        """A memory alarm, in effect on the node by the time this returns."""
        self.rabbit.ctl("set_vm_memory_high_watermark", ALARM_WATERMARK, timeout=30)
        wait_until(self.alarmed, 10, what="the memory alarm to be in effect")

    def alarm_off(self) -> None:
        self.rabbit.ctl("set_vm_memory_high_watermark", NORMAL_WATERMARK, timeout=30)
        wait_until(lambda: not self.alarmed(), 10, what="the memory alarm to clear")

    def alarmed(self) -> bool:
        with httpx.Client(auth=("guest", "guest"), timeout=5) as api:
            return api.get(f"{self.rabbit.management_url}/health/checks/alarms").status_code == 503

    def restore_redis(self) -> None:
        """No memory limit, no filler keys."""
        self.store.config_set("maxmemory", 0)
        fillers = list(self.store.scan_iter(FILLER_PREFIX + "*", count=1000))
        if fillers:
            self.store.delete(*fillers)

    # -- state --------------------------------------------------------------------

    def job_ids(self) -> set[str]:
        """Every job record in Redis."""
        prefix = b"taskplane:job:"
        return {
            key[len(prefix) :].decode() for key in self.store.scan_iter(prefix + b"*", count=1000)
        }

    def worker_report(self) -> str:
        """What a stalled worker was doing: every thread's stack (py-spy) and its log's tail."""
        parts = []
        for pid in [self.worker.popen.pid, *child_pids(self.worker.popen.pid)]:
            try:
                dump = subprocess.run(
                    [str(VENV_BIN / "py-spy"), "dump", "--pid", str(pid)],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                parts.append(f"--- py-spy dump {pid}\n{dump.stdout}{dump.stderr}")
            except (OSError, subprocess.SubprocessError) as exc:
                parts.append(f"--- py-spy dump {pid}: {exc!r}")
        parts.append(f"--- worker log\n{self.worker.log_tail(120)}")
        return "\n".join(parts)

    def ensure_processes(self) -> None:
        """The web and the worker run (a test may have wedged or lost one)."""
        if not self.web.alive():
            self.web, self.web_url = self.platform.start_web()
        if not self.worker.alive():
            self.worker = self.platform.start_worker("faults", concurrency=2)


@pytest.fixture(scope="module")
def fault_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultPlatform]:
    base = scratch_dir("tp-faults-")
    rabbit = RabbitNode(base)
    redis_node = RedisNode(base)
    platform = Platform(env={}, log_dir=tmp_path_factory.mktemp("broker-fault-logs"))
    try:
        rabbit.start()
        redis_node.start()
        platform.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "TASKPLANE_ENV": "testing",
            "CELERY_BROKER_URL": rabbit.url,
            "CELERY_RESULT_BACKEND": redis_node.url,
            "RABBITMQ_MANAGEMENT_URL": rabbit.management_url,
            "PYTHONUNBUFFERED": "1",
            "TASKPLANE_CONFIRM_TIMEOUT_S": str(CONFIRM_TIMEOUT_S),
            "TASKPLANE_REDIS_TIMEOUT_S": str(REDIS_TIMEOUT_S),
            "TASKPLANE_HEALTH_CACHE_S": "0",
            "TASKPLANE_RETRY_PUBLISH_TIMEOUT_S": "30",
        }
        web, web_url = platform.start_web()
        worker = platform.start_worker("faults", concurrency=2)
        store = redis.Redis.from_url(redis_node.url, socket_timeout=5, socket_connect_timeout=2)
        yield FaultPlatform(rabbit, redis_node, platform, web, web_url, worker, store)
    finally:
        for pid in [*rabbit.pids(), redis_node._pid()]:
            if pid:
                kill(pid, signal.SIGCONT)
        platform.stop_all()
        redis_node.stop()
        rabbit.stop()
        shutil.rmtree(base, ignore_errors=True)


def _heal(faults: FaultPlatform) -> None:
    """Undo every fault this module injects; each step runs even if another fails."""
    faults.thaw()
    try:
        if not faults.rabbit.is_up():
            faults.rabbit.start()
        faults.alarm_off()
    finally:
        if not faults.redis_node.is_up():
            faults.redis_node.start()
        faults.restore_redis()


@pytest.fixture()
def faults(fault_platform: FaultPlatform) -> Iterator[FaultPlatform]:
    """The module's platform, healthy: nothing frozen, no alarm, Redis without a limit,
    and ready. Healed again afterwards, so a failing test leaves nothing broken."""
    _heal(fault_platform)
    fault_platform.ensure_processes()
    with httpx.Client(base_url=fault_platform.web_url, timeout=10) as api:
        wait_until(
            lambda: api.get("/health/ready").status_code == 200,
            60,
            0.3,
            what="the platform to be ready before the test",
        )
    try:
        yield fault_platform
    finally:
        _heal(fault_platform)


# -- clients ----------------------------------------------------------------------


def timed(api: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    """One request and its wall time; a hang fails the test instead of raising a timeout."""
    started = time.monotonic()
    try:
        response = api.request(method, path, **kwargs)
    except httpx.TimeoutException:
        pytest.fail(f"{method} {path}: no answer within {time.monotonic() - started:.1f}s")
    return response, time.monotonic() - started


def web_client(faults: FaultPlatform) -> httpx.Client:
    """A new connection per request, so both gunicorn processes answer (keep-alive would
    pin every request to one), and a timeout well above every bound: a hang shows as a
    missed bound, not as a client error."""
    return httpx.Client(
        base_url=faults.web_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )


@dataclass
class Answer:
    status: int
    elapsed: float
    bound: float
    response: httpx.Response
    ids: list[str]

    def describe(self) -> str:
        return f"{self.status} after {self.elapsed:.2f}s (bound {self.bound:.2f}s)"


@dataclass
class Submitter:
    """Submits echo jobs and keeps every answer: its time, its bound, the ids it accepted."""

    api: httpx.Client
    answers: list[Answer] = field(default_factory=list)

    def submit(self, jobs: int = 1, bound: float | None = None) -> Answer:
        if jobs == 1:
            response, elapsed = timed(self.api, "POST", "/jobs", json=ECHO)
            ids = [response.json()["id"]] if response.status_code == 202 else []
        else:
            response, elapsed = timed(self.api, "POST", "/jobs/batch", json={"jobs": [ECHO] * jobs})
            ok = response.status_code == 202
            ids = [job["id"] for job in response.json()["jobs"]] if ok else []
        answer = Answer(response.status_code, elapsed, bound or submit_bound(jobs), response, ids)
        self.answers.append(answer)
        return answer

    @property
    def accepted(self) -> list[str]:
        return [job_id for answer in self.answers for job_id in answer.ids]

    def until_accepted(self, timeout: float) -> Answer:
        """Submit until one is accepted (an outage ending); every try counts for ``check``."""
        return wait_until(
            lambda: (answer := self.submit()).status == 202 and answer,
            timeout,
            0.3,
            what="a submission to be accepted",
        )

    def check(self) -> None:
        """Every answer came within its bound and was a 202 or a proper 503."""
        late = [a.describe() for a in self.answers if a.elapsed >= a.bound]
        assert not late, f"{len(late)} of {len(self.answers)} submits missed the bound: {late}"
        for answer in self.answers:
            assert answer.status in (202, 503), answer.response.text
            if answer.status == 503:
                assert_unavailable(answer)

    def wait_final(self, timeout: float, states: set[str] = FINAL) -> None:
        wait_all(self.api, self.accepted, states, timeout)


def assert_unavailable(answer: Answer) -> None:
    """503 unavailable with Retry-After, within the answer's bound."""
    assert answer.elapsed < answer.bound, f"answered {answer.describe()}"
    assert_error(answer.response, 503, "unavailable")
    assert int(answer.response.headers["Retry-After"]) > 0


def wait_all(api: httpx.Client, ids: list[str], states: set[str], timeout: float) -> None:
    """Every job in ``ids`` reaches one of ``states`` within ``timeout``."""
    pending = set(ids)
    last: dict[str, Any] = {}

    def done() -> bool:
        for job_id in list(pending):
            response = api.get(f"/jobs/{job_id}")
            if response.status_code == 200:
                last[job_id] = response.json()["state"]
                if last[job_id] in states:
                    pending.discard(job_id)
        return not pending

    try:
        wait_until(done, timeout, 0.3, what=f"{len(ids)} jobs to be {sorted(states)}")
    except TimeoutError:
        stuck = {job_id: last.get(job_id) for job_id in pending}
        pytest.fail(
            f"{len(pending)} of {len(ids)} jobs not {sorted(states)} after {timeout}s: {stuck}"
        )


@dataclass
class Readiness:
    """GET /health/ready, every answer within the readiness bound."""

    api: httpx.Client
    slowest: float = 0.0

    def probe(self) -> tuple[int, dict]:
        response, elapsed = timed(self.api, "GET", "/health/ready")
        self.slowest = max(self.slowest, elapsed)
        return response.status_code, response.json()

    def wait_for(self, check: Callable[[int, dict], bool], timeout: float, what: str) -> dict:
        status, body = wait_until(
            lambda: (seen := self.probe()) and check(*seen) and seen,
            timeout,
            0.3,
            what=f"/health/ready to answer {what}",
        )
        assert self.slowest < READY_BOUND_S, f"/health/ready took {self.slowest:.2f}s"
        return body


def blocked_gauge(api: httpx.Client) -> list[float]:
    """Every sample of taskplane_broker_blocked on /metrics (one per process or merged)."""
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    return [float(value) for value in BLOCKED_GAUGE.findall(response.text)]


def fill_redis(store: redis.Redis) -> None:
    """Write filler keys, big then smaller, until even a record-sized write is refused.

    A refused big SET is refused for its own query buffer: after it, smaller writes
    (a job record, the readiness probe) may still fit, and Redis would not be full.
    """
    n = 0
    for size in (512 * 1024, 32 * 1024, 1024, 64):
        value = b"x" * size
        try:
            for _ in range(200):
                store.set(f"{FILLER_PREFIX}{n}", value)
                n += 1
        except redis.exceptions.OutOfMemoryError:
            continue
        pytest.fail(f"Redis kept taking {size}-byte keys past maxmemory")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        store.hset(f"{FILLER_PREFIX}record", mapping={"id": "x" * 36, "state": "queued"})


def hold(seconds: float, check: Callable[[], None]) -> None:
    """Keep a fault in place for ``seconds``, running ``check`` about once a second."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check()
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))


# -- tests ------------------------------------------------------------------------


def test_memory_alarm_is_503_at_once_and_readiness_says_blocked(faults: FaultPlatform) -> None:
    """RabbitMQ blocks publishers during an alarm: the web must not wait for a confirm
    that cannot come, must leave no record for what it refused, and must recover alone."""
    with web_client(faults) as api:
        client = Submitter(api)
        ready = Readiness(api)
        client.until_accepted(30)
        before = faults.job_ids()
        faults.alarm_on()
        alarmed_at = time.monotonic()
        try:
            # The web hears connection.blocked within a second or two; submits before
            # that may still be taken, none may be late (checked below).
            wait_until(
                lambda: client.submit().status == 503 and time.monotonic() - alarmed_at >= 2,
                10,
                0.3,
                what="submits to be refused during the alarm",
            )
            for jobs in (1, 1, 5, 1, 1, 5, 1, 1):
                answer = client.submit(jobs, bound=AT_ONCE_S)
                assert_unavailable(answer)
            left = faults.job_ids() - before - set(client.accepted)
            assert not left, f"503s left {len(left)} job records: {sorted(left)[:5]}"

            body = ready.wait_for(
                lambda status, body: (
                    status == 503 and body["components"]["rabbitmq"]["status"] == "BLOCKED"
                ),
                5,
                "503 with rabbitmq BLOCKED",
            )
            assert body["status"] == "DOWN", body
            assert "memory" in body["components"]["rabbitmq"].get("reason", ""), body
            assert body["components"]["redis"]["status"] == "UP", body
            wait_until(lambda: 1.0 in blocked_gauge(api), 5, 0.3, what="taskplane_broker_blocked 1")
        finally:
            faults.alarm_off()

        client.until_accepted(10)
        body = ready.wait_for(lambda status, body: status == 200, 15, "200")
        assert body["components"]["rabbitmq"]["status"] == "UP", body
        wait_until(
            lambda: (values := blocked_gauge(api)) and not any(values),
            15,
            0.5,
            what="taskplane_broker_blocked back to 0",
        )
        client.check()
        client.wait_final(60)


def test_a_frozen_broker_costs_each_submit_at_most_the_bound(faults: FaultPlatform) -> None:
    """A SIGSTOPped node (a stalled VM, a long GC pause) takes bytes and never answers:
    each submit gives up within the bound, also when several wait at once, and the web
    takes jobs again once the node runs, without a restart."""
    with web_client(faults) as api:
        client = Submitter(api)
        for _ in range(4):  # both web processes have publishing connections
            client.until_accepted(30)
        faults.freeze(faults.rabbit.pids())
        frozen_until = time.monotonic() + 15
        during: list[Answer] = []

        def keep_submitting(lane: int) -> None:
            round_ = 0
            while time.monotonic() < frozen_until:
                during.append(client.submit(5 if (lane + round_) % 3 == 0 else 1))
                round_ += 1

        try:
            with ThreadPoolExecutor(3) as pool:
                for result in [pool.submit(keep_submitting, lane) for lane in range(3)]:
                    result.result()
        finally:
            faults.thaw()

        assert len(during) >= 9, f"only {len(during)} submits in 15 s"
        late = [a.describe() for a in during if a.elapsed >= a.bound]
        assert not late, f"{len(late)} of {len(during)} submits missed the bound: {late}"
        for answer in during:
            assert_unavailable(answer)
        client.until_accepted(20)
        client.check()
        client.wait_final(60)


def test_a_frozen_redis_is_503_within_the_redis_bound(faults: FaultPlatform) -> None:
    """A SIGSTOPped Redis never answers: the job record cannot be written, and the
    submit gives up after the Redis timeout instead of the client library's defaults."""
    with web_client(faults) as api:
        client = Submitter(api)
        client.until_accepted(30)
        faults.freeze([faults.redis_node._pid()])
        try:
            for jobs in (1, 1, 5, 1):
                assert_unavailable(client.submit(jobs, bound=REDIS_BOUND_S))
        finally:
            faults.thaw()
        client.until_accepted(10)
        client.check()
        client.wait_final(60)


def test_a_frozen_redis_leaves_no_record_for_a_refused_submit(faults: FaultPlatform) -> None:
    """A 503 means the job does not exist: a record write that was sent to the frozen
    Redis must not turn into a job once Redis runs again (it would stay queued forever)."""
    with web_client(faults) as api:
        client = Submitter(api)
        client.until_accepted(30)
        before = faults.job_ids()
        faults.freeze([faults.redis_node._pid()])
        try:
            for jobs in (1, 5, 1):
                assert client.submit(jobs, bound=REDIS_BOUND_S).status == 503
        finally:
            faults.thaw()
        client.until_accepted(10)
        client.wait_final(60)

        def refused_records() -> dict[str, Any]:
            return {
                job_id: faults.store.hget(f"taskplane:job:{job_id}", "state")
                for job_id in faults.job_ids() - before - set(client.accepted)
            }

        # Removals the frozen Redis could not take are retried at least every 5 s.
        try:
            wait_until(lambda: not refused_records(), 15, 0.5, what="refused records to go")
        except TimeoutError:
            left = refused_records()
            pytest.fail(f"refused submits left {len(left)} job records (id: state): {left}")


def test_a_full_redis_is_503_and_not_ready(faults: FaultPlatform) -> None:
    """Redis at maxmemory with noeviction answers PING but refuses writes: submits fail
    and readiness must see it, or a load balancer keeps sending traffic."""
    with web_client(faults) as api:
        client = Submitter(api)
        ready = Readiness(api)
        client.until_accepted(30)
        before = faults.job_ids()
        store = faults.store
        policy = store.config_get("maxmemory-policy")["maxmemory-policy"]
        try:
            store.config_set("maxmemory-policy", "noeviction")
            store.config_set("maxmemory", store.info("memory")["used_memory"] + 2 * 1024 * 1024)
            fill_redis(store)
            # Filled to the brim, usage still breathes with client buffers, and a write
            # in a dip would fit: the limit goes well below what is used, which is the
            # same state for Redis (over maxmemory, nothing to evict).
            store.config_set("maxmemory", store.info("memory")["used_memory"] // 2)

            for jobs in (1, 5, 1):
                assert_unavailable(client.submit(jobs))
            assert faults.job_ids() - before - set(client.accepted) == set()
            body = ready.wait_for(
                lambda status, body: (
                    status == 503 and body["components"]["redis"]["status"] == "DOWN"
                ),
                5,
                "503 with redis DOWN",
            )
            assert body["status"] == "DOWN", body
        finally:
            faults.restore_redis()
            store.config_set("maxmemory-policy", policy)

        client.until_accepted(10)
        ready.wait_for(lambda status, body: status == 200, 10, "200")
        client.check()
        client.wait_final(60)


def test_a_worker_keeps_its_jobs_across_a_20s_alarm(faults: FaultPlatform) -> None:
    """Running jobs finish while the broker is blocked; the jobs queued behind them run,
    a failing one publishes its retry through the block (the retry waits up to 30 s for
    a confirm, longer than the alarm); after the alarm every one succeeds and the
    worker still takes new jobs."""
    with web_client(faults) as api:
        sleep = {"type": "diagnostics.sleep", "payload": {"seconds": 3}}
        fail_once = {"type": "diagnostics.fail", "payload": {"times": 1}}
        running, queued = [], []
        for job, ids in ((sleep, running), (sleep, running), (fail_once, queued), (ECHO, queued)):
            response = api.post("/jobs", json=job)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        wait_all(api, running, {"started"}, 30)

        faults.alarm_on()
        try:
            states = [api.get(f"/jobs/{job_id}").json()["state"] for job_id in running]
            assert states == ["started", "started"], f"finished before the alarm: {states}"

            def worker_alive() -> None:
                assert faults.worker.alive(), faults.worker.log_tail()

            hold(20, worker_alive)
        finally:
            faults.alarm_off()

        client = Submitter(api)
        client.until_accepted(10)
        try:
            wait_all(api, running + queued + client.accepted, {"succeeded"}, 45)
        except pytest.fail.Exception as failure:
            pytest.fail(f"{failure}\n{faults.worker_report()}")
        client.check()


def test_a_retry_the_blocked_broker_will_not_confirm_returns_the_job_to_its_queue(
    faults: FaultPlatform,
) -> None:
    """A job fails during an alarm longer than its retry may wait for a confirm: its
    message is not acked (the retry was never confirmed) but returned to the queue, so
    the job runs again instead of being lost or failed."""
    with web_client(faults) as api:
        faults.worker.stop()
        response = api.post("/jobs", json={"type": "diagnostics.fail", "payload": {"times": 1}})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        faults.alarm_on()
        try:
            impatient = faults.platform.start_worker(
                "impatient", concurrency=1, env={"TASKPLANE_RETRY_PUBLISH_TIMEOUT_S": "3"}
            )
            try:
                # Attempt 1 fails, its retry cannot be confirmed, the message goes back,
                # and attempt 2 succeeds while the broker still blocks publishers.
                wait_all(api, [job_id], {"succeeded"}, 40)
                assert faults.alarmed(), "the alarm ended before the job finished"
                job = api.get(f"/jobs/{job_id}").json()
                assert job["attempts"] == 2, job
                log = impatient.log_path.read_text(errors="replace")
                assert "returning its message to the queue" in log, impatient.log_tail()
            finally:
                impatient.stop()
        finally:
            faults.alarm_off()
