"""The leader lease: of any number of schedulers, one fires; the others stand by.

The lease is a Redis key holding the leader's token with an expiry of ``ttl_s``.
The leader renews it every ``renew_s``; a standby tries to take it every
``renew_s``. When the leader dies (``kill -9``, a lost host), its key expires and a
standby takes it on its next try: a takeover within ``ttl_s + renew_s``. A leader
that stops cleanly gives the lease up, and a standby takes over within ``renew_s``.

The lease is an optimisation, not the guarantee: fires have deterministic job ids,
so two schedulers that both believe they lead (a leader paused past its expiry)
still create each fire once. The leader also stops firing by its own clock when it
could not renew in time (``held``), without waiting to hear from Redis.
"""

from __future__ import annotations

import time
import uuid

import redis

LEASE_KEY = "taskplane:scheduler:lease"
LEADER_KEY = "taskplane:scheduler:leader"

# KEYS: lease, leader. ARGV: token, ttl ms, now (unix s), holder name.
_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('HSET', KEYS[2], 'since', ARGV[3], 'holder', ARGV[4], 'token', ARGV[1])
else
  return 0
end
redis.call('HSET', KEYS[2], 'heartbeat', ARGV[3])
return 1
"""

# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """One scheduler's hold on the leader lease."""

    def __init__(self, client: redis.Redis, holder: str, ttl_s: float, renew_s: float) -> None:
        if renew_s * 2 > ttl_s:
            raise ValueError("the lease must outlive at least two renewals")
        self.holder = holder
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.token = f"{holder}:{uuid.uuid4().hex[:12]}"
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)
        self._valid_until = 0.0
        self._last_try = float("-inf")

    def hold(self) -> bool:
        """Take or renew the lease; True while this scheduler is the leader."""
        started = time.monotonic()
        self._last_try = started
        held = bool(
            self._hold(
                keys=[LEASE_KEY, LEADER_KEY],
                args=[self.token, int(self.ttl_s * 1000), f"{time.time():.3f}", self.holder],
            )
        )
        # Counted from before the call: Redis may have set the expiry late in it.
        self._valid_until = started + self.ttl_s - self.renew_s if held else 0.0
        return held

    def due(self) -> bool:
        """Whether it is time to renew (leader) or try again (standby)."""
        return time.monotonic() - self._last_try >= self.renew_s

    def held(self) -> bool:
        """Whether this scheduler may still act as leader, by its own clock."""
        return time.monotonic() < self._valid_until

    def release(self) -> None:
        """Give the lease up (a clean stop), so a standby takes over at its next try."""
        if self._valid_until:
            self._release(keys=[LEASE_KEY], args=[self.token])
        self._valid_until = 0.0
