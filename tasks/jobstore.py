"""Job records in Redis: the state a client sees, written by web and worker.

Celery's own result meta cannot tell "never submitted" from "waiting"
(both are PENDING), so Taskplane keeps one hash per job. Every state change
is a small Lua script, so concurrent writers (a cancel racing a worker start,
a redelivery racing a late ack) cannot interleave.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

KEY_PREFIX = "taskplane:job:"
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
WAITING_STATES = frozenset({"queued", "scheduled", "retrying"})

# Returns {outcome, attempts}. Creates the record for a message published by a
# producer other than our web (it has no record yet).
_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return {state, tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')}
end
if not state then
  redis.call('HSET', KEYS[1], 'id', ARGV[4], 'type', ARGV[3], 'queue', ARGV[5],
             'created_at', ARGV[1], 'attempts', 0)
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'started', 'started_at', ARGV[1], 'worker', ARGV[2])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
return {'started', attempts}
"""

# Moves a job to a final or retrying state unless it already is final.
_SETTLE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return state end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 'ok'
"""

# Cancels a job that has not started; returns the state the job is in afterwards.
_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'queued' or state == 'scheduled' or state == 'retrying' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'next_attempt_at')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 'cancelled'
end
return state
"""

_JSON_FIELDS = ("result", "error")
_INT_FIELDS = ("attempts",)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC timestamp with milliseconds, as every record field uses."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    return rfc3339(datetime.now(UTC))


@dataclass(frozen=True)
class StartOutcome:
    proceed: bool
    state: str
    attempt: int


class JobStore:
    """Reads and writes job records; shared by the web and the worker."""

    def __init__(self, client: redis.Redis, finished_ttl_s: int) -> None:
        self.redis = client
        self.finished_ttl_s = finished_ttl_s
        self._start = client.register_script(_START)
        self._settle = client.register_script(_SETTLE)
        self._cancel = client.register_script(_CANCEL)

    @staticmethod
    def key(job_id: str) -> str:
        return KEY_PREFIX + job_id

    def create(self, job_id: str, job_type: str, queue: str, state: str = "queued") -> dict:
        record = {
            "id": job_id,
            "type": job_type,
            "queue": queue,
            "state": state,
            "attempts": 0,
            "created_at": utcnow(),
        }
        self.redis.hset(self.key(job_id), mapping=record)
        return record

    def delete(self, job_id: str) -> None:
        self.redis.delete(self.key(job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.key(job_id))
        return decode_record(raw) if raw else None

    def start(self, job_id: str, job_type: str, queue: str, worker: str) -> StartOutcome:
        state, attempts = self._start(
            keys=[self.key(job_id)], args=[utcnow(), worker or "", job_type, job_id, queue]
        )
        state = _text(state)
        return StartOutcome(proceed=state == "started", state=state, attempt=int(attempts))

    def retrying(self, job_id: str, error: dict, next_attempt_at: str) -> str:
        fields = {"state": "retrying", "error": error, "next_attempt_at": next_attempt_at}
        return self._settle_with(job_id, fields, ttl=0)

    def succeeded(self, job_id: str, result: Any) -> str:
        fields = {"state": "succeeded", "result": result, "finished_at": utcnow(), "error": None}
        return self._settle_with(job_id, fields, ttl=self.finished_ttl_s)

    def failed(self, job_id: str, error: dict) -> str:
        fields = {"state": "failed", "error": error, "finished_at": utcnow()}
        return self._settle_with(job_id, fields, ttl=self.finished_ttl_s)

    def cancel(self, job_id: str) -> str:
        return _text(self._cancel(keys=[self.key(job_id)], args=[utcnow(), self.finished_ttl_s]))

    def _settle_with(self, job_id: str, fields: dict[str, Any], ttl: int) -> str:
        args: list[Any] = [ttl]
        for name, value in fields.items():
            args += [name, json.dumps(value) if name in _JSON_FIELDS else value]
        return _text(self._settle(keys=[self.key(job_id)], args=args))


def decode_record(raw: dict[Any, Any]) -> dict[str, Any]:
    record = {_text(k): _text(v) for k, v in raw.items()}
    for name in _JSON_FIELDS:
        if name in record:
            record[name] = json.loads(record[name])
    for name in _INT_FIELDS:
        if name in record:
            record[name] = int(record[name])
    return record


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def redis_client(url: str) -> redis.Redis:
    """A client with short timeouts: a hung Redis must not hang a request or a job."""
    return redis.Redis.from_url(
        url,
        socket_timeout=3.0,
        socket_connect_timeout=2.0,
        health_check_interval=15,
        retry_on_timeout=True,
    )
