"""Job records in Redis: the state a client sees, written by web and worker.

Celery's own result meta cannot tell "never submitted" from "waiting"
(both are PENDING), so Taskplane keeps one hash per job. Every state change
is a small Lua script, so concurrent writers (a cancel racing a worker start,
a redelivery racing a late ack, a replay racing a dead-letter event) cannot
interleave. The same Redis keeps the dead-letter index, idempotency keys and
effect markers.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

KEY_PREFIX = "taskplane:job:"
DEAD_PREFIX = "taskplane:dead:"
IDEMPOTENCY_PREFIX = "taskplane:idempotency:"
EFFECT_PREFIX = "taskplane:effect:"
# A tombstone marks the id of a submission the web gave up on (it answered
# 503). Redis may still run that submission's write later: a frozen Redis
# keeps the bytes in its socket and runs them when it wakes, after the web
# timed out. The create checks the tombstone, so whichever of the two runs
# first, no record of a refused job remains. Kept far longer than any freeze.
GONE_PREFIX = "taskplane:gone:"
GONE_TTL_S = 7 * 24 * 3600
# Records per call of the create script. Redis runs nothing else while a
# script runs, so a batch (up to 1,000 jobs) is cut into calls this size:
# other clients wait for one chunk at most, not for the whole batch.
CREATE_CHUNK = 500
# Retention sweep: records per script call.
SWEEP_CHUNK = 500
# Index entries one search call may look at, matching or not.
SEARCH_BUDGET = 5000
MAX_SCORE = 2**53
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
WAITING_STATES = frozenset({"queued", "scheduled", "retrying"})

# Search indexes, kept by the same scripts that change a record, so a listing
# never disagrees with the records. One sorted set per filter value, scored
# by creation time in milliseconds: "all", "state:<s>", "type:<t>",
# "queue:<q>", "tag:<key>=<value>"; a hash of counts per "<type>\t<state>";
# and "expiry", the time each finished record is due to go (the retention
# sweep deletes record and index entries together). Scripts name these keys
# themselves rather than in KEYS: Taskplane runs on one Redis, not a cluster.
INDEX_PREFIX = "taskplane:ix:"
_INDEX_LIB = """
local IX = 'taskplane:ix:'
local function ix_tag_keys(tags)
  local keys = {}
  if tags and tags ~= '' then
    local ok, decoded = pcall(cjson.decode, tags)
    if ok and type(decoded) == 'table' then
      for k, v in pairs(decoded) do keys[#keys + 1] = IX .. 'tag:' .. k .. '=' .. tostring(v) end
    end
  end
  return keys
end
local function ix_count(jtype, state, by)
  local field = jtype .. '\\t' .. state
  if redis.call('HINCRBY', IX .. 'counts', field, by) <= 0 then
    redis.call('HDEL', IX .. 'counts', field)
  end
end
local function ix_add(id, ms, state, jtype, queue, tags)
  redis.call('ZADD', IX .. 'all', ms, id)
  redis.call('ZADD', IX .. 'state:' .. state, ms, id)
  redis.call('ZADD', IX .. 'type:' .. jtype, ms, id)
  redis.call('ZADD', IX .. 'queue:' .. queue, ms, id)
  for _, key in ipairs(ix_tag_keys(tags)) do redis.call('ZADD', key, ms, id) end
  ix_count(jtype, state, 1)
end
local function ix_move(id, jtype, old, new)
  if old == new then return end
  local ms = redis.call('ZSCORE', IX .. 'all', id)
  if not ms then return end
  redis.call('ZREM', IX .. 'state:' .. old, id)
  redis.call('ZADD', IX .. 'state:' .. new, ms, id)
  ix_count(jtype, old, -1)
  ix_count(jtype, new, 1)
end
local function ix_drop(key, id)
  if not id then return end
  local f = redis.call('HMGET', key, 'state', 'type', 'queue', 'tags')
  redis.call('ZREM', IX .. 'expiry', id)
  if not f[1] or redis.call('ZREM', IX .. 'all', id) == 0 then return end
  redis.call('ZREM', IX .. 'state:' .. f[1], id)
  redis.call('ZREM', IX .. 'type:' .. (f[2] or ''), id)
  redis.call('ZREM', IX .. 'queue:' .. (f[3] or ''), id)
  for _, k in ipairs(ix_tag_keys(f[4])) do redis.call('ZREM', k, id) end
  ix_count(f[2] or '', f[1], -1)
end
-- A finished record goes after its retention: the sweep deletes it and its
-- index entries; its own TTL, a day later, only backs the sweep up.
local function ix_retain(key, id, default_ttl)
  local ttl = tonumber(redis.call('HGET', key, 'retention_s') or default_ttl)
  if ttl <= 0 then return end
  redis.call('EXPIRE', key, ttl + 86400)
  redis.call('ZADD', IX .. 'expiry', tonumber(redis.call('TIME')[1]) + ttl, id)
end
local function ix_keep(key, id)
  redis.call('PERSIST', key)
  redis.call('ZREM', IX .. 'expiry', id)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# ARGV: now, worker, type, id, queue, recorded, takeover, run. Returns {outcome, attempts}.
# ``run`` names this execution: the worker's Redis client retries a call that
# timed out, and a Redis that was frozen rather than down runs both copies,
# so the second finds its own run already started and goes on with it (it
# must neither count a second attempt nor drop the job as a duplicate).
# A message our web published always has a record; if it is gone, the web
# answered 503 and removed it (the job does not exist): do not run it. A
# message from another producer has no record yet: create one.
# A job already "started" is running under another message, unless this
# delivery takes it over (a redelivery after its holder died, or our own
# continuation): a second copy of the message (a publish retried after a lost
# confirm) must not run it twice at once. The running copy's message is
# still unacked, so dropping the duplicate loses nothing.
_START = (
    _INDEX_LIB
    + """
local state = redis.call('HGET', KEYS[1], 'state')
local workflow = redis.call('HGET', KEYS[1], 'workflow') or ''
local callback = redis.call('HGET', KEYS[1], 'callback_url') or ''
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return {state, tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0'), workflow, callback}
end
if state == 'started' and redis.call('HGET', KEYS[1], 'run') == ARGV[8] then
  return {'started', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0'), workflow, callback}
end
if state == 'started' and ARGV[7] ~= '1' then
  return {'duplicate', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0'), workflow, callback}
end
if not state then
  if ARGV[6] == '1' then return {'abandoned', 0, '', ''} end
  redis.call('HSET', KEYS[1], 'id', ARGV[4], 'type', ARGV[3], 'queue', ARGV[5],
             'created_at', ARGV[1], 'attempts', 0)
  ix_add(ARGV[4], now_ms(), 'started', ARGV[3], ARGV[5], nil)
else
  ix_move(ARGV[4], redis.call('HGET', KEYS[1], 'type') or ARGV[3], state, 'started')
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'started', 'started_at', ARGV[1], 'worker', ARGV[2],
           'run', ARGV[8])
redis.call('HDEL', KEYS[1], 'next_attempt_at', 'scheduled_for', 'progress')
return {'started', attempts, workflow, callback}
"""
)

# Moves a job to a final or retrying state unless it already is final.
# KEYS: record. ARGV: default retention (0: not final), id, then field, value pairs.
_SETTLE = (
    _INDEX_LIB
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return state end
local new = state
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] == 'state' then new = ARGV[i + 1] end
end
ix_move(ARGV[2], redis.call('HGET', KEYS[1], 'type') or '', state, new)
if tonumber(ARGV[1]) > 0 then ix_retain(KEYS[1], ARGV[2], ARGV[1]) end
return 'ok'
"""
)

# Cancels a job that has not started; returns the state the job is in afterwards.
# KEYS: records. ARGV: now, default retention, ids. One reply per record.
_CANCEL = (
    _INDEX_LIB
    + """
local replies = {}
for i = 1, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if not state then
    replies[i] = 'missing'
  elseif state == 'queued' or state == 'scheduled' or state == 'retrying' then
    redis.call('HSET', KEYS[i], 'state', 'cancelled', 'finished_at', ARGV[1])
    redis.call('HDEL', KEYS[i], 'next_attempt_at')
    ix_move(ARGV[i + 2], redis.call('HGET', KEYS[i], 'type') or '', state, 'cancelled')
    ix_retain(KEYS[i], ARGV[i + 2], ARGV[2])
    replies[i] = 'cancelled'
  else
    replies[i] = state
  end
end
return replies
"""
)

# KEYS: record, dead index. ARGV: now, epoch, error json, reason, ttl, id, type, queue.
# A job dead-lettered by the broker itself (delivery limit) never got a
# "failed" from a worker: this is where it gets one. Dead jobs do not expire
# while they sit in the dead-letter queue.
_DEAD = (
    _INDEX_LIB
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'id', ARGV[6], 'type', ARGV[7], 'queue', ARGV[8],
             'created_at', ARGV[1], 'attempts', 0)
  ix_add(ARGV[6], now_ms(), 'failed', ARGV[7], ARGV[8], nil)
elseif state ~= 'failed' then
  ix_move(ARGV[6], redis.call('HGET', KEYS[1], 'type') or ARGV[7], state, 'failed')
end
if state ~= 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[1], 'error', ARGV[3])
end
redis.call('HSET', KEYS[1], 'dead_reason', ARGV[4], 'dead_lettered_at', ARGV[1])
ix_keep(KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
return state or 'missing'
"""
)

# KEYS: record, dead index. ARGV: now, id, JSON object of more to note about
# the previous run (its payload's digest). Keeps the previous run in history.
_REPLAY = (
    _INDEX_LIB
    + """
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then return 'missing' end
local fields = {}
for i = 1, #record, 2 do fields[record[i]] = record[i + 1] end
local history = {}
if fields['history'] then history = cjson.decode(fields['history']) end
local previous = {replayed_at = ARGV[1]}
for _, name in ipairs({'state', 'attempts', 'error', 'started_at', 'finished_at',
                       'worker', 'dead_reason', 'dead_lettered_at'}) do
  previous[name] = fields[name]
end
if ARGV[3] and ARGV[3] ~= '' then
  for name, value in pairs(cjson.decode(ARGV[3])) do previous[name] = value end
end
table.insert(history, previous)
redis.call('HDEL', KEYS[1], 'error', 'result', 'started_at', 'finished_at', 'worker',
           'dead_reason', 'dead_lettered_at', 'next_attempt_at')
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'history', cjson.encode(history))
ix_move(ARGV[2], fields['type'] or '', fields['state'], 'queued')
ix_keep(KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
return 'queued'
"""
)

# KEYS: idempotency key. ARGV: fingerprint, job id, ttl, tombstone prefix.
# Returns nil when claimed. A key held by a job the web gave up on (its
# tombstone exists) is free again.
_CLAIM = """
local existing = redis.call('HMGET', KEYS[1], 'fingerprint', 'job_id')
if existing[1] and redis.call('EXISTS', ARGV[4] .. existing[2]) == 0 then return existing end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'job_id', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return nil
"""

# KEYS: record 1, tombstone set 1, record 2, tombstone set 2, ... ARGV, for
# each record in turn: token, publishing mark, how many field and value items
# follow, then those items. Returns one reply per record: {'created'},
# {'exists', <its fields and values>} or {'refused'}.
# The token names this create attempt ("" for a fresh random id, which has
# only one); a tombstone holds the tokens of attempts the web gave up on. A
# record that exists already is returned, not overwritten: a caller-given
# (deterministic) id creates one job however many producers race on it. The
# publishing mark ("<token>:<deadline ms>", deterministic ids only) tells a
# racing producer that the message is not confirmed yet.
# One call writes many records (a whole batch, or CREATE_CHUNK of it): a
# call per record costs Redis and Python time per job. Each record is decided
# in order, so an id given twice in one call is created once, then "exists".
_CREATE = (
    _INDEX_LIB
    + """
local replies = {}
local at = 1
local ms = now_ms()
for i = 1, #KEYS, 2 do
  local token, mark = ARGV[at], ARGV[at + 1]
  local first, last = at + 3, at + 2 + tonumber(ARGV[at + 2])
  at = last + 1
  if redis.call('SISMEMBER', KEYS[i + 1], token) == 1 then
    replies[#replies + 1] = {'refused'}
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    replies[#replies + 1] = {'exists', redis.call('HGETALL', KEYS[i])}
  else
    redis.call('HSET', KEYS[i], unpack(ARGV, first, last))
    local f = redis.call('HMGET', KEYS[i], 'id', 'state', 'type', 'queue', 'tags')
    ix_add(f[1], ms, f[2], f[3], f[4], f[5])
    if token ~= '' then redis.call('HSET', KEYS[i], 'token', token) end
    if mark ~= '' then redis.call('HSET', KEYS[i], 'publishing', mark) end
    replies[#replies + 1] = {'created'}
  end
end
return replies
"""
)

# KEYS: record 1, tombstone 1, record 2, tombstone 2, ... ARGV: tombstone ttl,
# then one token per record. A record goes only if this attempt created it.
_FORGET = (
    _INDEX_LIB
    + """
for i = 1, #KEYS, 2 do
  local token = ARGV[(i + 1) / 2 + 1]
  if (redis.call('HGET', KEYS[i], 'token') or '') == token then
    ix_drop(KEYS[i], redis.call('HGET', KEYS[i], 'id'))
    redis.call('DEL', KEYS[i])
  end
  redis.call('SADD', KEYS[i + 1], token)
  redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
end
return #KEYS / 2
"""
)

# KEYS: records. ARGV: their publishing marks. Clears each mark still ours.
_PUBLISHED = """
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'publishing') == ARGV[i] then
    redis.call('HDEL', KEYS[i], 'publishing')
  end
end
return #KEYS
"""

# KEYS: record. ARGV: the mark seen, the new mark. Takes over a publication
# whose producer's deadline passed (it died or gave up without a trace).
_ADOPT = """
if redis.call('HGET', KEYS[1], 'publishing') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'publishing', ARGV[2])
return 1
"""

# KEYS: effect key. ARGV: token, lease. Returns nil when claimed, else what is held
# ("done:<json outcome>" or "pending:<token of the run performing it now>") and
# the milliseconds left on it.
_CLAIM_EFFECT = """
local held = redis.call('GET', KEYS[1])
if held == 'pending:' .. ARGV[1] then return nil end  -- our own call, retried
if held then return {held, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], 'pending:' .. ARGV[1], 'EX', ARGV[2])
return nil
"""

# KEYS: effect key. ARGV: token, lease. 1 when the claim was still ours and is extended.
_RENEW_EFFECT = """
if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_EFFECT = """
if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: record. ARGV: attempt, progress (JSON). Only the run that holds the
# job writes its progress: a run that lost the job (it was cancelled, or
# another attempt started after this one was given up for dead) writes nothing.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'started' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
"""

# KEYS: records. ARGV: 1 to purge dead-lettered ones too (their dead letters
# are gone already), then the ids. Deletes finished records with their index
# entries; one reply per record: purged, dead (kept), missing, or its state.
_PURGE = (
    _INDEX_LIB
    + """
local replies = {}
for i = 1, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if not state then
    replies[i] = 'missing'
  elseif state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' then
    replies[i] = state
  elseif ARGV[1] ~= '1' and redis.call('HEXISTS', KEYS[i], 'dead_lettered_at') == 1 then
    replies[i] = 'dead'
  else
    ix_drop(KEYS[i], ARGV[i + 1])
    redis.call('DEL', KEYS[i])
    replies[i] = 'purged'
  end
end
return replies
"""
)

# ARGV: now (s), most records to delete, record key prefix. The retention
# sweep: finished records past their retention go with their index entries.
# A record replayed since (no longer final) or dead-lettered is not due.
_SWEEP = (
    _INDEX_LIB
    + """
local due = redis.call('ZRANGEBYSCORE', IX .. 'expiry', '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local deleted = 0
for _, id in ipairs(due) do
  local key = ARGV[3] .. id
  local state = redis.call('HGET', key, 'state')
  if (state == 'succeeded' or state == 'failed' or state == 'cancelled')
     and redis.call('HEXISTS', key, 'dead_lettered_at') == 0 then
    ix_drop(key, id)
    redis.call('DEL', key)
    deleted = deleted + 1
  else
    redis.call('ZREM', IX .. 'expiry', id)
  end
end
return {#due, deleted}
"""
)

# KEYS: the indexes of a query's filters (all of them: a hit is in every one).
# ARGV: highest score, cursor id ('' none), lowest score, limit, budget, record
# key prefix. Newest first, ties by id descending: (score, id) is a total
# order, so a cursor (the last entry looked at) resumes exactly after it,
# however many jobs arrived since. The smallest index drives the walk; each
# entry costs a ZSCORE per other filter, and the walk stops after ``budget``
# entries whatever it found, so a query's cost is bounded. Returns the next
# cursor ('' when the walk reached the end), how many entries it looked at,
# then the matching records, read in the same atomic step.
_SEARCH = """
local hi, after, lo = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local limit, budget, prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local drive, smallest = 1, nil
for k = 1, #KEYS do
  local size = redis.call('ZCARD', KEYS[k])
  if smallest == nil or size < smallest then drive, smallest = k, size end
end
local hits, examined, last_score, last_id = {}, 0, nil, nil
local start, by_rank = 0, false
if after ~= '' then
  local score = redis.call('ZSCORE', KEYS[drive], after)
  if score and tonumber(score) == hi then
    start, by_rank = redis.call('ZREVRANK', KEYS[drive], after) + 1, true
  end
end
local finished = false
while #hits < limit and examined < budget and not finished do
  local batch
  if by_rank then
    batch = redis.call('ZREVRANGE', KEYS[drive], start, start + 99, 'WITHSCORES')
  else
    batch = redis.call('ZREVRANGEBYSCORE', KEYS[drive], hi, lo, 'WITHSCORES', 'LIMIT', start, 100)
  end
  if #batch == 0 then finished = true end
  for j = 1, #batch, 2 do
    local id, score = batch[j], tonumber(batch[j + 1])
    if score < lo then finished = true break end
    if by_rank or after == '' or score < hi or id < after then
      examined = examined + 1
      last_score, last_id = score, id
      local member = true
      for k = 1, #KEYS do
        if k ~= drive and not redis.call('ZSCORE', KEYS[k], id) then member = false break end
      end
      if member then
        local record = redis.call('HGETALL', prefix .. id)
        if #record > 0 then hits[#hits + 1] = record end
      end
      if #hits >= limit or examined >= budget then break end
    end
  end
  start = start + 100
end
local cursor = ''
if not finished and last_id then cursor = string.format('%d', last_score) .. ':' .. last_id end
local reply = {cursor, examined}
for _, record in ipairs(hits) do reply[#reply + 1] = record end
return reply
"""

# In the order JobStore binds them.
SCRIPTS = (
    _START,
    _SETTLE,
    _CANCEL,
    _DEAD,
    _REPLAY,
    _CLAIM,
    _CREATE,
    _FORGET,
    _PUBLISHED,
    _ADOPT,
    _CLAIM_EFFECT,
    _RENEW_EFFECT,
    _RELEASE_EFFECT,
    _PROGRESS,
    _PURGE,
    _SWEEP,
    _SEARCH,
)
_JSON_FIELDS = ("result", "error", "history", "tags", "progress")
_INT_FIELDS = ("attempts",)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC timestamp with milliseconds, as every record field uses."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    return rfc3339(datetime.now(UTC))


class RecordRefused(RedisError):
    """A create met the tombstone of its id: that submission was already given up."""


@dataclass(frozen=True)
class NewRecord:
    """A record to create: its fields, the attempt's token and publishing mark."""

    fields: dict[str, Any]
    token: str = ""
    publishing: str = ""


@dataclass(frozen=True)
class SearchPage:
    records: list[dict[str, Any]]
    position: tuple[int, str] | None  # where the next page starts after; None: the end
    examined: int


@dataclass(frozen=True)
class CreateOutcome:
    state: str  # "created", "exists" (see ``existing``) or "refused" (given up before)
    existing: dict[str, Any] | None = None


@dataclass(frozen=True)
class EffectClaim:
    claimed: bool
    outcome: Any = None
    done: bool = False
    # Who performs the effect now, and how long until that claim lapses
    # unless its performer extends it.
    holder: str = ""
    expires_in_s: float = 0.0


@dataclass(frozen=True)
class StartOutcome:
    proceed: bool
    state: str
    attempt: int
    workflow: str = ""  # "<workflow>/<step>" when the job is a workflow's step
    callback_url: str = ""  # the job's callback_url, "" for none (tasks/core/callbacks.py)


class JobStore:
    """Reads and writes job records; shared by the web and the worker."""

    def __init__(self, client: redis.Redis, finished_ttl_s: int) -> None:
        self.redis = client
        self.finished_ttl_s = finished_ttl_s
        (
            self._start,
            self._settle,
            self._cancel,
            self._dead,
            self._replay,
            self._claim,
            self._create,
            self._forget,
            self._published,
            self._adopt,
            self._claim_effect,
            self._renew_effect,
            self._release_effect,
            self._progress,
            self._purge,
            self._sweep,
            self._search,
        ) = (client.register_script(source) for source in SCRIPTS)

    @staticmethod
    def key(job_id: str) -> str:
        return KEY_PREFIX + job_id

    @staticmethod
    def dead_key(queue: str) -> str:
        return DEAD_PREFIX + queue

    # -- web side ---------------------------------------------------------------

    def create(
        self, job_id: str, job_type: str, queue: str, state: str = "queued", **extra: str
    ) -> dict[str, Any]:
        """Write one new record (a fresh id); see ``create_many`` for the general case."""
        record = {
            "id": job_id,
            "type": job_type,
            "queue": queue,
            "state": state,
            "attempts": 0,
            "created_at": utcnow(),
            **extra,
        }
        (outcome,) = self.create_many([NewRecord(record)])
        if outcome.state != "created":
            raise RecordRefused(f"job {job_id} exists already or was given up")
        return record

    def create_many(self, records: list["NewRecord"]) -> list["CreateOutcome"]:
        """Write new records, a script call per CREATE_CHUNK; an id that exists keeps its record.

        One call for many records rather than a pipeline of one call each: a
        call per record costs Redis and Python time per job, and redis-py sends
        a SCRIPT EXISTS round trip ahead of every pipeline that holds a script
        (a call outside a pipeline goes straight to EVALSHA and loads the
        script only when Redis answers NOSCRIPT).
        """
        outcomes: list[CreateOutcome] = []
        for start in range(0, len(records), CREATE_CHUNK):
            outcomes += self._create_chunk(records[start : start + CREATE_CHUNK])
        return outcomes

    def _create_chunk(self, records: list["NewRecord"]) -> list["CreateOutcome"]:
        """One call of the create script: a record key and tombstone key per record."""
        keys: list[str] = []
        args: list[Any] = []
        for new in records:
            job_id = new.fields["id"]
            fields = _field_items(new.fields)
            keys += (self.key(job_id), GONE_PREFIX + job_id)
            args += (new.token, new.publishing, len(fields), *fields)
        return [_create_outcome(reply) for reply in self._create(keys=keys, args=args)]

    def forget(self, job_ids: list[str], tokens: list[str] | None = None) -> None:
        """Remove the records of jobs the web refused, and tombstone those attempts."""
        tokens = tokens or [""] * len(job_ids)
        keys = [key for job_id in job_ids for key in (self.key(job_id), GONE_PREFIX + job_id)]
        if keys:
            self._forget(keys=keys, args=[GONE_TTL_S, *tokens])

    def published(self, job_ids: list[str], marks: list[str]) -> None:
        """Clear the publishing marks of confirmed deterministic-id jobs."""
        if job_ids:
            self._published(keys=[self.key(i) for i in job_ids], args=marks)

    def publishing_mark(self, job_id: str) -> str | None:
        return text(self.redis.hget(self.key(job_id), "publishing"))

    def adopt(self, job_id: str, seen: str, mark: str) -> bool:
        """Take over the publication of a job whose producer's deadline passed."""
        return bool(self._adopt(keys=[self.key(job_id)], args=[seen, mark]))

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.key(job_id))
        return decode_record(raw) if raw else None

    def cancel(self, job_id: str) -> str:
        """Cancel a waiting job; the state it is in afterwards ("missing" when none)."""
        return self.cancel_many([job_id])[0]

    def cancel_many(self, job_ids: list[str]) -> list[str]:
        """Cancel waiting jobs in one atomic step; per id, the state it is in afterwards."""
        if not job_ids:
            return []
        replies = self._cancel(
            keys=[self.key(i) for i in job_ids], args=[utcnow(), self.finished_ttl_s, *job_ids]
        )
        return [text(reply) for reply in replies]

    def purge_many(self, job_ids: list[str], *, dead_too: bool = False) -> list[str]:
        """Delete finished records and their index entries; per id: purged, dead, missing, or
        the state of a job that is not finished. Dead-lettered jobs stay unless ``dead_too``
        (their dead letters must be gone first, or a replay would find no record)."""
        if not job_ids:
            return []
        replies = self._purge(
            keys=[self.key(i) for i in job_ids], args=["1" if dead_too else "0", *job_ids]
        )
        return [text(reply) for reply in replies]

    def sweep(self, now_s: float, limit: int = SWEEP_CHUNK) -> tuple[int, int]:
        """Delete finished records past their retention, with their index entries.

        Returns (entries due, records deleted); fewer due than ``limit`` means done for now.
        """
        due, deleted = self._sweep(args=[int(now_s), limit, KEY_PREFIX])
        return int(due), int(deleted)

    def search(
        self,
        index_keys: list[str],
        *,
        high: int = MAX_SCORE,
        after: str = "",
        low: int = 0,
        limit: int = 50,
        budget: int = SEARCH_BUDGET,
    ) -> "SearchPage":
        """Records in every index of ``index_keys``, newest first, from (high, after) down to low.

        At most ``budget`` index entries are looked at: a page may hold fewer
        than ``limit`` records and still have a cursor to go on from.
        """
        reply = self._search(
            keys=index_keys or [index_key("all")],
            args=[high, after, low, limit, budget, KEY_PREFIX],
        )
        cursor, examined = text(reply[0]), int(reply[1])
        records = [decode_record(dict(zip(r[::2], r[1::2], strict=True))) for r in reply[2:]]
        position = None
        if cursor:
            score, _, job_id = cursor.partition(":")
            position = (int(score), job_id)
        return SearchPage(records, position, examined)

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (type, state), as the state-changing scripts keep them."""
        raw = self.redis.hgetall(INDEX_PREFIX + "counts")
        out: dict[tuple[str, str], int] = {}
        for field, value in raw.items():
            job_type, _, state = text(field).partition("\t")
            if int(value) > 0:
                out[(job_type, state)] = int(value)
        return out

    def claim_idempotency_key(
        self, key: str, fingerprint: str, job_id: str, ttl_s: int
    ) -> tuple[str, str] | None:
        """Claim ``key`` for ``job_id``; if someone holds it, return (fingerprint, job_id)."""
        held = self._claim(
            keys=[IDEMPOTENCY_PREFIX + key], args=[fingerprint, job_id, ttl_s, GONE_PREFIX]
        )
        return (text(held[0]), text(held[1])) if held else None

    def release_idempotency_key(self, key: str, job_id: str) -> None:
        full = IDEMPOTENCY_PREFIX + key
        if text(self.redis.hget(full, "job_id")) == job_id:
            self.redis.delete(full)

    # -- worker side ------------------------------------------------------------

    def start(
        self,
        job_id: str,
        job_type: str,
        queue: str,
        worker: str,
        recorded: bool = False,
        takeover: bool = False,
    ) -> StartOutcome:
        flags = ["1" if recorded else "0", "1" if takeover else "0"]
        run = uuid.uuid4().hex  # the same for the client's retries of this one call
        state, attempts, workflow, callback_url = self._start(
            keys=[self.key(job_id)],
            args=[utcnow(), worker or "", job_type, job_id, queue, *flags, run],
        )
        state = text(state)
        return StartOutcome(
            proceed=state == "started",
            state=state,
            attempt=int(attempts),
            workflow=text(workflow),
            callback_url=text(callback_url),
        )

    def progress(self, job_id: str, attempt: int, progress: dict[str, Any]) -> bool:
        """Show how far the running attempt got; False when it no longer holds the job."""
        return bool(
            self._progress(keys=[self.key(job_id)], args=[str(attempt), json.dumps(progress)])
        )

    def retrying(self, job_id: str, error: dict, next_attempt_at: str) -> str:
        fields = {"state": "retrying", "error": error, "next_attempt_at": next_attempt_at}
        return self._settle_with(job_id, fields, ttl=0)

    def succeeded(self, job_id: str, result: Any) -> str:
        fields = {"state": "succeeded", "result": result, "finished_at": utcnow(), "error": None}
        return self._settle_with(job_id, fields, ttl=self.finished_ttl_s)

    def failed(self, job_id: str, error: dict) -> str:
        fields = {"state": "failed", "error": error, "finished_at": utcnow()}
        return self._settle_with(job_id, fields, ttl=self.finished_ttl_s)

    def claim_effect(self, job_id: str, name: str, token: str, lease_s: int) -> EffectClaim:
        """Claim the right to perform an effect, or learn who has it or what it gave."""
        held = self._claim_effect(keys=[effect_key(job_id, name)], args=[token, max(1, lease_s)])
        if held is None:
            return EffectClaim(claimed=True)
        value, ttl_ms = text(held[0]), int(held[1])
        if value.startswith("done:"):
            return EffectClaim(claimed=False, outcome=json.loads(value[5:]), done=True)
        return EffectClaim(
            claimed=False, holder=value.removeprefix("pending:"), expires_in_s=max(ttl_ms, 0) / 1000
        )

    def renew_effect(self, job_id: str, name: str, token: str, lease_s: int) -> bool:
        """Extend our claim by a lease; False when it is no longer ours (it lapsed)."""
        return bool(
            self._renew_effect(keys=[effect_key(job_id, name)], args=[token, max(1, lease_s)])
        )

    def record_effect(self, job_id: str, name: str, outcome: Any) -> None:
        self.redis.set(
            effect_key(job_id, name), "done:" + json.dumps(outcome), ex=self.finished_ttl_s
        )

    def release_effect(self, job_id: str, name: str, token: str) -> None:
        """Give the claim back after the effect failed, so a retry may try again."""
        self._release_effect(keys=[effect_key(job_id, name)], args=[token])

    # -- dead letters -----------------------------------------------------------

    def dead_lettered(
        self, job_id: str, job_type: str, queue: str, reason: str, error: dict
    ) -> str:
        now = datetime.now(UTC)
        return text(
            self._dead(
                keys=[self.key(job_id), self.dead_key(queue)],
                args=[
                    rfc3339(now),
                    now.timestamp(),
                    json.dumps(error),
                    reason,
                    self.finished_ttl_s,
                    job_id,
                    job_type,
                    queue,
                ],
            )
        )

    def reset_for_replay(self, job_id: str, queue: str, note: dict[str, Any] | None = None) -> str:
        """Back to queued, the previous run (and ``note`` about it) kept in ``history``."""
        return text(
            self._replay(
                keys=[self.key(job_id), self.dead_key(queue)],
                args=[utcnow(), job_id, json.dumps(note) if note else ""],
            )
        )

    def dead_ids(self, queue: str, offset: int = 0, limit: int = 100) -> list[str]:
        """Newest first."""
        ids = self.redis.zrevrange(self.dead_key(queue), offset, offset + limit - 1)
        return [text(i) for i in ids]

    def dead_count(self, queue: str) -> int:
        return int(self.redis.zcard(self.dead_key(queue)))

    def forget_dead(self, queue: str, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.zrem(self.dead_key(queue), *job_ids)

    def get_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.key(job_id))
        return [decode_record(raw) if raw else None for raw in pipe.execute()]

    def _settle_with(self, job_id: str, fields: dict[str, Any], ttl: int) -> str:
        args: list[Any] = [ttl, job_id]
        for name, value in fields.items():
            args += [name, json.dumps(value) if name in _JSON_FIELDS else value]
        return text(self._settle(keys=[self.key(job_id)], args=args))


def _field_items(fields: dict[str, Any]) -> list[Any]:
    """A record's fields as HSET's flat name, value list; JSON fields as JSON text."""
    return [
        item
        for name, value in fields.items()
        for item in (name, json.dumps(value) if name in _JSON_FIELDS else value)
    ]


def _create_outcome(reply: list[Any]) -> CreateOutcome:
    """One record's reply from the create script, with an existing record decoded."""
    state = text(reply[0])
    if state != "exists":
        return CreateOutcome(state)
    flat = reply[1]
    return CreateOutcome(state, decode_record(dict(zip(flat[::2], flat[1::2], strict=True))))


def index_key(kind: str, value: str = "") -> str:
    """An index's key: "all", or "state", "type", "queue", "tag" with its value
    (a tag's value is "key=value")."""
    return INDEX_PREFIX + (kind if kind == "all" else f"{kind}:{value}")


def effect_key(job_id: str, name: str) -> str:
    return f"{EFFECT_PREFIX}{job_id}:{name}"


def decode_record(raw: dict[Any, Any]) -> dict[str, Any]:
    record = {text(k): text(v) for k, v in raw.items()}
    for name in _JSON_FIELDS:
        if name in record:
            record[name] = json.loads(record[name])
    for name in _INT_FIELDS:
        if name in record:
            record[name] = int(record[name])
    for run in record.get("history", []):  # earlier runs, as the replay script kept them
        if isinstance(run.get("error"), str):
            run["error"] = json.loads(run["error"])
        if run.get("attempts") is not None:
            run["attempts"] = int(run["attempts"])
    return record


def text(value: Any) -> Any:
    """A Redis or AMQP value as str when it came as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def redis_client(url: str, *, patient: bool, timeout_s: float = 1.0) -> redis.Redis:
    """A client with short timeouts: a hung Redis must not hang a request or a job.

    Workers are ``patient``: they ride out a Redis blip of a few seconds with
    reconnect-and-retry before giving up (and then retry the job later). The
    web's every call ends within ``timeout_s`` (``TASKPLANE_REDIS_TIMEOUT_S``)
    for a Redis that accepts connections but does not answer (frozen, swapping):
    a timed-out call is not retried, only a pooled connection found dead is,
    once and at once (that fails fast: refused or reset).
    """
    if patient:
        return redis.Redis.from_url(
            url,
            socket_timeout=3.0,
            socket_connect_timeout=2.0,
            health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=15,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )
