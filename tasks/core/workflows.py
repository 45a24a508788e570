"""Workflows: DAGs of ordinary jobs, advanced by the steps themselves, each step once.

Built on the job records and the submission core, not on Celery's canvas: a chord
needs the result backend and a counter that a failed header leaves waiting
forever, and nothing in the canvas shows a workflow as a whole. Here a workflow is
a Redis hash (its steps and state) and two sets, and every step is a job with a
deterministic id, ``uuid5(workflow, step)``, created through the submission core.

The heart is ``sweep``: it submits every step whose dependencies are all done and
that is not created yet. It is idempotent (an existing id is created once, however
many sweeps race) and every event calls it: the workflow's creation, a step's
success, a retry. A step's job calls ``step_succeeded`` before its message is
acked (late acks), and again when a redelivered message finds the job already
succeeded: a worker killed between the two neither loses a step's dependents nor
publishes them twice. A fan-in waits on a set of done steps (SADD is idempotent),
and a map step's completion on a set of done items, checked atomically in Lua.

Redis: ``taskplane:workflow:<id>`` (hash: ``spec``, ``state``, ``created_at``,
``finished_at``, ``failed_step``, ``reason``, ``n:<step>`` item counts,
``e:<step>`` errors of steps that failed before they had a job),
``taskplane:workflow-done:<id>`` (steps and map items done),
``taskplane:workflow-failed:<id>`` (failed steps), ``taskplane:workflow-created:<id>``
(steps whose jobs exist), ``taskplane:workflow-items:<id>:<step>`` (a map step's
done items).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from tasks.core.errors import Unavailable, unavailable_as_one_error
from tasks.core.jobstore import FINAL_STATES, utcnow
from tasks.core.submission import InvalidJob, NewJob, check, submit
from tasks.core.workflow_spec import (
    MAX_MAP_ITEMS,
    ReferenceError_,
    Step,
    Workflow,
    from_fields,
    resolve,
)

logger = logging.getLogger("taskplane.workflows")

PREFIX = "taskplane:workflow:"
# A step's job is recorded failed (and its workflow with it) a moment before
# its worker rejects the message into the dead-letter queue: a retry asked for
# right after the failure waits this long for the dead letter to arrive.
WORKFLOW_NAMESPACE = uuid.UUID("3d0c6a52-1f4e-5b8a-9c27-6e1d4b7a2f90")
STATES = ("running", "succeeded", "failed", "cancelled")

# The step ARGV[1] is done: it is no longer failed (a replay succeeded), and a
# failed workflow with no failed step left runs again. KEYS: workflow, done, failed.
_MARK_DONE = """
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'failed' and redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('HDEL', KEYS[1], 'finished_at', 'failed_step', 'reason')
  state = 'running'
end
return state
"""

# KEYS: workflow, done, failed. ARGV: step id, now.
_STEP_DONE = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
"""
    + _MARK_DONE
)

# KEYS: workflow, done, failed, items. ARGV: step id, now, item index.
# One item of a map step is done; the step is done when every item is.
_ITEM_DONE = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
redis.call('SADD', KEYS[4], ARGV[3])
local total = tonumber(redis.call('HGET', KEYS[1], 'n:' .. ARGV[1]) or '-1')
if redis.call('SCARD', KEYS[4]) < total then return 'waiting' end
"""
    + _MARK_DONE
)

# KEYS: workflow, failed. ARGV: step id, reason, now, error json ('' none).
_STEP_FAILED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
redis.call('SADD', KEYS[2], ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'e:' .. ARGV[1], ARGV[4]) end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[3], 'failed_step', ARGV[1],
             'reason', ARGV[2])
  return 'failed'
end
return state
"""

# KEYS: workflow, plus its other keys. ARGV: to state, now, ttl, from states (csv).
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
local allowed = false
for from in string.gmatch(ARGV[4], '[^,]+') do if from == state then allowed = true end end
if not allowed then return state end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return ARGV[1]
"""


class WorkflowNotFound(Exception):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}")
        self.workflow_id = workflow_id


@dataclass(frozen=True)
class StepRef:
    """Which workflow step a job is: ``<workflow>/<step>`` or ``<workflow>/<step>#<item>``."""

    workflow_id: str
    step: str
    item: int | None = None

    def text(self) -> str:
        return f"{self.workflow_id}/{self.step}" + ("" if self.item is None else f"#{self.item}")

    @classmethod
    def parse(cls, value: str) -> StepRef:
        workflow_id, _, rest = value.partition("/")
        step, _, item = rest.partition("#")
        return cls(workflow_id, step, int(item) if item else None)


def step_job_id(workflow_id: str, step: str, item: int | None = None) -> str:
    """The job id of a step (or of one item of a map step): the same for every producer."""
    return str(uuid.uuid5(WORKFLOW_NAMESPACE, StepRef(workflow_id, step, item).text()))


class WorkflowStore:
    def __init__(self, client: Any, finished_ttl_s: int) -> None:
        self.redis = client
        self.finished_ttl_s = finished_ttl_s
        self._step_done, self._item_done, self._step_failed, self._finish = (
            client.register_script(s) for s in (_STEP_DONE, _ITEM_DONE, _STEP_FAILED, _FINISH)
        )

    @staticmethod
    def keys(workflow_id: str) -> tuple[str, str, str, str]:
        base = PREFIX + workflow_id
        return base, base + ":done", base + ":failed", base + ":created"

    def items_key(self, workflow_id: str, step: str) -> str:
        return f"{PREFIX}{workflow_id}:items:{step}"

    def create(self, workflow_id: str, workflow: Workflow) -> None:
        key = self.keys(workflow_id)[0]
        self.redis.hset(
            key,
            mapping={
                "id": workflow_id,
                "spec": json.dumps(workflow.as_fields()),
                "state": "running",
                "created_at": utcnow(),
            },
        )

    def delete(self, workflow_id: str, workflow: Workflow) -> None:
        items = [self.items_key(workflow_id, s) for s in workflow.steps]
        self.redis.delete(*self.keys(workflow_id), *items)

    def load(
        self, workflow_id: str
    ) -> tuple[dict[str, str], Workflow, set[str], set[str], set[str]]:
        """(the hash, the workflow, done, failed, created); WorkflowNotFound when gone."""
        key, done, failed, created = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.smembers(done)
        pipe.smembers(failed)
        pipe.smembers(created)
        raw, done_set, failed_set, created_set = pipe.execute()
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "spec" not in fields:
            raise WorkflowNotFound(workflow_id)
        return (
            fields,
            from_fields(json.loads(fields["spec"])),
            {_text(m) for m in done_set},
            {_text(m) for m in failed_set},
            {_text(m) for m in created_set},
        )

    def step_done(self, ref: StepRef) -> str:
        key, done, failed, _ = self.keys(ref.workflow_id)
        if ref.item is None:
            return _text(self._step_done(keys=[key, done, failed], args=[ref.step, utcnow()]))
        items = self.items_key(ref.workflow_id, ref.step)
        return _text(
            self._item_done(keys=[key, done, failed, items], args=[ref.step, utcnow(), ref.item])
        )

    def step_failed(self, workflow_id: str, step: str, reason: str, error: Any = None) -> str:
        key, _, failed, _ = self.keys(workflow_id)
        encoded = "" if error is None else json.dumps(error)
        return _text(
            self._step_failed(keys=[key, failed], args=[step, reason[:1000], utcnow(), encoded])
        )

    def clear_failure(self, workflow_id: str, step: str) -> None:
        key, _, failed, _ = self.keys(workflow_id)
        pipe = self.redis.pipeline()
        pipe.srem(failed, step)
        pipe.hdel(key, f"e:{step}")
        pipe.execute()

    def state(self, workflow_id: str) -> str | None:
        return _text(self.redis.hget(self.keys(workflow_id)[0], "state"))

    def mark_created(self, workflow_id: str, steps: list[str]) -> None:
        if steps:
            self.redis.sadd(self.keys(workflow_id)[3], *steps)

    def set_items(self, workflow_id: str, step: str, count: int) -> int:
        key = self.keys(workflow_id)[0]
        self.redis.hsetnx(key, f"n:{step}", count)
        return int(self.redis.hget(key, f"n:{step}"))

    def finish(self, workflow_id: str, workflow: Workflow, to: str, from_states: str) -> str:
        items = [self.items_key(workflow_id, s) for s in workflow.steps if workflow.steps[s].map]
        return _text(
            self._finish(
                keys=[*self.keys(workflow_id), *items],
                args=[to, utcnow(), self.finished_ttl_s, from_states],
            )
        )

    def resume(self, workflow_id: str) -> None:
        key, _, failed, _ = self.keys(workflow_id)
        if not self.redis.scard(failed) and self.redis.hget(key, "state") == b"failed":
            self.redis.hset(key, "state", "running")
            self.redis.hdel(key, "finished_at", "failed_step", "reason")


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def store_of(app: Any) -> WorkflowStore:
    return app.workflows


# -- the engine ---------------------------------------------------------------------


def start(app: Any, workflow: Workflow) -> str:
    """Record a workflow and submit its first ready steps; its id once they are confirmed.

    Raises Unavailable (nothing kept) when Redis or the broker does not answer.
    """
    store = store_of(app)
    workflow_id = str(uuid.uuid4())
    try:
        store.create(workflow_id, workflow)
    except RedisError as exc:
        raise Unavailable("job storage", exc) from exc
    try:
        sweep(app, workflow_id)
    except (Unavailable, RedisError) as exc:
        try:
            store.delete(workflow_id, workflow)
        except RedisError:
            logger.warning("workflow %s: could not remove its record", workflow_id)
        if isinstance(exc, Unavailable):
            raise
        raise Unavailable("job storage", exc) from exc
    return workflow_id


def sweep(app: Any, workflow_id: str) -> None:
    """Submit every step that is ready and not created yet; finish a workflow that is done.

    Idempotent: steps have deterministic job ids, so sweeps that race create each
    step once. A failed or cancelled workflow starts nothing new.
    """
    store = store_of(app)
    fields, workflow, done, failed, created = store.load(workflow_id)
    if fields.get("state") != "running" or failed:
        return
    if all(sid in done for sid in workflow.steps):
        store.finish(workflow_id, workflow, "succeeded", "running")
        return
    ready = [
        workflow.steps[sid]
        for sid in workflow.order
        if sid not in done
        and sid not in created
        and all(dep in done for dep in workflow.steps[sid].depends_on)
    ]
    if not ready:
        return
    results = _results(app, workflow_id, workflow, {d for s in ready for d in s.depends_on})
    jobs: list[NewJob] = []
    made: list[str] = []
    empty_maps: list[str] = []
    for step in ready:
        try:
            planned = _plan(app, workflow_id, step, results)
        except (InvalidJob, ReferenceError_) as exc:
            reason, error = _resolution_error(step, exc)
            logger.warning("workflow %s: step %s cannot run: %s", workflow_id, step.id, reason)
            store.step_failed(workflow_id, step.id, reason, error)
            return  # the workflow failed: nothing else starts
        if not planned:  # a map over an empty list is done at once, with []
            empty_maps.append(step.id)
            continue
        jobs += planned
        made.append(step.id)
    if jobs:
        submit(app, jobs)
        store.mark_created(workflow_id, made)
        if store.state(workflow_id) == "cancelled":  # cancelled while these were created
            for job in jobs:
                app.jobstore.cancel(job.job_id)
    if empty_maps:
        for sid in empty_maps:
            store.mark_created(workflow_id, [sid])
            store.step_done(StepRef(workflow_id, sid))
        sweep(app, workflow_id)


def _plan(app: Any, workflow_id: str, step: Step, results: dict[str, Any]) -> list[NewJob]:
    tags = {"workflow": workflow_id, "step": step.id}
    if step.map is None:
        payload = resolve(step.payload, results)
        job = check(
            app,
            _envelope(step, payload),
            job_id=step_job_id(workflow_id, step.id),
            tags=tags,
        )
        return [_with_ref(job, StepRef(workflow_id, step.id))]
    items = resolve(step.map, results)
    if not isinstance(items, list):
        raise ReferenceError_(f"map needs a list, found {type(items).__name__}")
    if len(items) > MAX_MAP_ITEMS:
        raise ReferenceError_(f"map over {len(items)} items; at most {MAX_MAP_ITEMS}")
    count = store_of(app).set_items(workflow_id, step.id, len(items))
    jobs = []
    for index, item in enumerate(items[:count]):
        payload = resolve(step.payload, results, item)
        job = check(
            app,
            _envelope(step, payload),
            job_id=step_job_id(workflow_id, step.id, index),
            tags={**tags, "item": str(index)},
        )
        jobs.append(_with_ref(job, StepRef(workflow_id, step.id, index)))
    return jobs


def _envelope(step: Step, payload: Any) -> dict[str, Any]:
    envelope = {"type": step.type, "payload": payload}
    if step.tags:
        envelope["tags"] = step.tags
    return envelope


def _with_ref(job: NewJob, ref: StepRef) -> NewJob:
    return NewJob(
        job.job_type, job.payload, job.run_at, job.job_id, job.tags, job.parent_id, ref.text()
    )


def _resolution_error(step: Step, exc: Exception) -> tuple[str, dict[str, Any]]:
    if isinstance(exc, InvalidJob):
        detail = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in exc.problems)
        reason = f"the resolved payload does not fit {step.type}: {detail or exc.message}"
    else:
        reason = f"a reference did not resolve: {exc}"
    return reason, {"type": "unresolvable", "message": reason[:2000]}


def _results(app: Any, workflow_id: str, workflow: Workflow, steps: set[str]) -> dict[str, Any]:
    """The results of ``steps`` (done ones): a map step's as the list of its items' results."""
    wanted: list[tuple[str, int | None]] = []
    counts: dict[str, int] = {}
    store = store_of(app)
    for sid in steps:
        if workflow.steps[sid].map is None:
            wanted.append((sid, None))
        else:
            raw = store.redis.hget(store.keys(workflow_id)[0], f"n:{sid}")
            counts[sid] = int(raw or 0)
            wanted += [(sid, i) for i in range(counts[sid])]
    records = app.jobstore.get_many([step_job_id(workflow_id, s, i) for s, i in wanted])
    results: dict[str, Any] = {sid: [None] * counts[sid] for sid in counts}
    for (sid, index), record in zip(wanted, records, strict=True):
        value = (
            None if record is None or record.get("state") != "succeeded" else record.get("result")
        )
        if index is None:
            results[sid] = value
        else:
            results[sid][index] = value
    return results


# -- events from the runtime ------------------------------------------------------


def step_succeeded(app: Any, ref_text: str) -> None:
    """A step's job succeeded (or a redelivery found it so): mark it done, start what is ready."""
    ref = StepRef.parse(ref_text)
    store = store_of(app)
    state = store.step_done(ref)
    if state == "running":
        sweep(app, ref.workflow_id)


def step_failed(app: Any, ref_text: str, error: dict[str, Any] | None) -> None:
    """A step's job failed for good: the workflow fails, unless the step may fail."""
    ref = StepRef.parse(ref_text)
    store = store_of(app)
    try:
        _, workflow, _, _, _ = store.load(ref.workflow_id)
    except WorkflowNotFound:
        return
    step = workflow.steps.get(ref.step)
    if step is None:
        return
    if step.continue_on_failure:
        if store.step_done(ref) == "running":
            sweep(app, ref.workflow_id)
        return
    where = ref.step if ref.item is None else f"{ref.step} (item {ref.item})"
    message = (error or {}).get("message", "failed")
    store.step_failed(ref.workflow_id, ref.step, f"step {where} failed: {message}")


# -- operations (HTTP and CLI) ----------------------------------------------------


@unavailable_as_one_error
def cancel(app: Any, workflow_id: str) -> dict[str, Any]:
    """Cancel a workflow: nothing new starts, and no step job that has not started will."""
    store = store_of(app)
    fields, workflow, _, _, created = store.load(workflow_id)
    if fields.get("state") == "succeeded":
        raise WorkflowNotCancellable(workflow_id, "succeeded")
    if store.finish(workflow_id, workflow, "cancelled", "running,failed") == "succeeded":
        raise WorkflowNotCancellable(workflow_id, "succeeded")
    for sid in created:
        for job_id in _job_ids(app, workflow_id, workflow.steps[sid]):
            app.jobstore.cancel(job_id)
    return describe(app, workflow_id)


@unavailable_as_one_error
def retry(app: Any, workflow_id: str) -> dict[str, Any]:
    """Run the failed steps again (their jobs from the dead letters) and resume the workflow."""
    store = store_of(app)
    fields, workflow, _, failed, created = store.load(workflow_id)
    if fields.get("state") != "failed":
        raise WorkflowNotRetryable(workflow_id, fields.get("state", ""))
    for sid in sorted(failed):
        step = workflow.steps[sid]
        if sid in created:
            records = app.jobstore.get_many(_job_ids(app, workflow_id, step))
            dead = [r["id"] for r in records if r and r.get("state") == "failed"]
            if dead:
                _replay_dead_letters(app, app.job_types[step.type].queue, dead)
        store.clear_failure(workflow_id, sid)
    store.resume(workflow_id)
    sweep(app, workflow_id)
    return describe(app, workflow_id)


def _replay_dead_letters(app: Any, queue: str, job_ids: list[str]) -> None:
    """Replay the jobs' dead letters, waiting for late ones (deadletters.replay_dead_waiting).

    Without the wait, a retry right after the failure found no dead letter yet,
    resumed the workflow all the same, and left it running for ever. A dead
    letter that never comes (an operator purged it) answers 503 and leaves the
    workflow failed, so the step is not resumed without its job.
    """
    from tasks.core.deadletters import replay_dead_waiting

    missing = replay_dead_waiting(app, queue, job_ids).not_found
    if missing:
        raise Unavailable(f"the dead letter of failed job {missing[0]} in {queue}.dead")


class WorkflowNotCancellable(Exception):
    def __init__(self, workflow_id: str, state: str) -> None:
        super().__init__(f"workflow {workflow_id!r} has {state}; there is nothing to cancel")
        self.workflow_id = workflow_id
        self.state = state


class WorkflowNotRetryable(Exception):
    def __init__(self, workflow_id: str, state: str) -> None:
        super().__init__(f"workflow {workflow_id!r} is {state}; only a failed one can be retried")
        self.workflow_id = workflow_id
        self.state = state


def _job_ids(app: Any, workflow_id: str, step: Step) -> list[str]:
    if step.map is None:
        return [step_job_id(workflow_id, step.id)]
    store = store_of(app)
    count = int(store.redis.hget(store.keys(workflow_id)[0], f"n:{step.id}") or 0)
    return [step_job_id(workflow_id, step.id, i) for i in range(count)]


@unavailable_as_one_error
def describe(app: Any, workflow_id: str) -> dict[str, Any]:
    """The workflow as GET shows it: its state and every step's state, job, attempts, result."""
    store = store_of(app)
    fields, workflow, done, failed, created = store.load(workflow_id)
    state = fields.get("state", "running")
    ids = {sid: _job_ids(app, workflow_id, workflow.steps[sid]) for sid in created}
    flat = [job_id for sid in workflow.order for job_id in ids.get(sid, [])]
    records = dict(zip(flat, app.jobstore.get_many(flat), strict=True)) if flat else {}
    steps = []
    for sid in workflow.order:
        step = workflow.steps[sid]
        view: dict[str, Any] = {
            "id": sid,
            "type": step.type,
            "depends_on": list(step.depends_on),
            "state": "waiting",
            "job_id": None,
            "attempts": 0,
            "result": None,
            "error": None,
            "reason": None,
        }
        if f"e:{sid}" in fields:
            view.update(state="failed", error=json.loads(fields[f"e:{sid}"]))
        elif sid in created and step.map is None:
            record = records.get(ids[sid][0]) or {}
            view.update(
                job_id=ids[sid][0],
                state=record.get("state", "expired"),
                attempts=record.get("attempts", 0),
                result=record.get("result"),
                error=record.get("error"),
            )
        elif sid in created:
            items = [records.get(job_id) or {} for job_id in ids[sid]]
            view.update(_map_view(items, ids[sid], sid in done))
        elif sid in done:  # a map over an empty list
            view.update(state="succeeded", result=[], items={"total": 0})
        if view["state"] == "waiting" and state in ("failed", "cancelled"):
            view.update(
                state="cancelled",
                reason="the workflow was cancelled"
                if state == "cancelled"
                else f"can no longer run: {fields.get('reason') or 'a step failed'}",
            )
        if sid in failed and view["state"] not in ("failed",) and step.map is not None:
            view["state"] = "failed"
        steps.append(view)
    return {
        "id": workflow_id,
        "state": state,
        "created_at": fields.get("created_at"),
        "finished_at": fields.get("finished_at"),
        "failed_step": fields.get("failed_step"),
        "reason": fields.get("reason"),
        "steps": steps,
    }


def _map_view(items: list[dict[str, Any]], job_ids: list[str], done: bool) -> dict[str, Any]:
    states = [item.get("state", "expired") for item in items]
    counts = {s: states.count(s) for s in set(states)}
    if done:
        state = "succeeded"
    elif counts.get("failed"):
        state = "failed"
    elif any(s not in FINAL_STATES for s in states):
        state = "started" if counts.get("started") else "queued"
    else:
        state = "started"
    return {
        "state": state,
        "job_id": None,
        "attempts": sum(int(item.get("attempts", 0)) for item in items),
        "result": [item.get("result") for item in items] if done else None,
        "items": {"total": len(items), "job_ids": job_ids, **counts},
    }
