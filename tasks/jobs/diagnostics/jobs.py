"""Handlers of the diagnostics job types: controlled success, delay, failure and death."""

import os
import signal
import time
from typing import Any

from tasks.core.errors import PermanentError, TransientError
from tasks.jobs.diagnostics.schema import (
    CrashPayload,
    EchoPayload,
    FailPayload,
    SleepPayload,
    SumPayload,
)
from tasks.runtime.effects import JobContext


def echo(payload: EchoPayload, context: JobContext) -> dict[str, Any]:
    return {"data": payload.data}


def sum_values(payload: SumPayload, context: JobContext) -> dict[str, Any]:
    total = sum(payload.values)
    return {"sum": int(total) if float(total).is_integer() else total, "count": len(payload.values)}


# Chaos runs count how often each job's effect happened (must be exactly once).
EFFECTS_KEY = "taskplane:diagnostics:effects"


def sleep(payload: SleepPayload, context: JobContext) -> dict[str, Any]:
    """Sleep (reporting progress in ``steps``), then produce one observable effect,
    guarded like a real side effect."""
    if payload.steps:
        for step in range(1, payload.steps + 1):
            time.sleep(payload.seconds / payload.steps)
            context.progress(step, payload.steps, message=f"step {step} of {payload.steps}")
    else:
        time.sleep(payload.seconds)
    if payload.effect and context.store is not None:
        store = context.store

        def effect() -> int:
            time.sleep(payload.effect_s)
            return store.redis.hincrby(EFFECTS_KEY, context.job_id, 1)

        context.once("effect", effect)
    return {"slept_s": payload.seconds}


def fail(payload: FailPayload, context: JobContext) -> dict[str, Any]:
    if payload.times is None or context.attempt <= payload.times:
        message = f"{payload.message} (attempt {context.attempt})"
        raise PermanentError(message) if payload.permanent else TransientError(message)
    return {"failed_attempts": context.attempt - 1}


def crash(payload: CrashPayload, context: JobContext) -> dict[str, Any]:
    """SIGKILL the process running this job: no cleanup, no ack, like an OOM kill."""
    if payload.times is None or context.attempt <= payload.times:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"crashed_attempts": context.attempt - 1}
