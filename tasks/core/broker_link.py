"""Broker connections that never wait past a deadline, and what RabbitMQ says about alarms.

py-amqp waits without a bound for most of what it asks the broker (the
handshake is bounded per frame, but opening a channel, ``confirm.select``, a
declare and closing a connection are not), and closing waits for the
broker's ``close-ok``. A broker that is blocked (a memory or disk alarm: it
stops reading from publishing connections), frozen (a stopped VM, a long
pause) or half there (it accepts TCP and never speaks) therefore hangs the
caller. ``BoundedConnection`` gives every read and write a deadline and is
dropped by closing its socket, never by waiting for the broker.

RabbitMQ tells a connection that published when it blocks publishers
(``connection.blocked``, with a reason such as "low on memory") and when it
lets them go (``connection.unblocked``); it tells only connections that
publish while the alarm is on. ``BrokerWatch`` therefore keeps one
connection per process that publishes a transient, unroutable probe every
second and listens for those notices, so the web knows about an alarm
before a client's submit runs into it (py-amqp parses the notice but drops
its reason; the subclass keeps it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import amqp
from amqp import spec
from kombu.transport import pyamqp

logger = logging.getLogger("taskplane.broker")

# The watch publishes its probe to the default exchange with a routing key no
# queue has: RabbitMQ drops it, and counts the connection as a publisher.
PROBE_ROUTING_KEY = "taskplane.alarm-probe"
PROBE_INTERVAL_S = 1.0
WATCH_CONNECT_TIMEOUT_S = 3.0
WATCH_BACKOFF_CAP_S = 5.0


class BrokerBlocked(ConnectionError):
    """RabbitMQ blocks publishers (a resource alarm); an OSError, like a dead connection."""

    def __init__(self, reason: str):
        super().__init__(f"the broker blocks publishers: {reason}")
        self.reason = reason


@dataclass
class BrokerAlarm:
    """Whether this process knows the broker to be blocking publishers, and why."""

    reason: str | None = None
    since: float | None = None  # time.time() of the first notice
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                logger.warning("RabbitMQ blocks publishers: %s", reason)
                self.since = time.time()
            self.reason = reason

    def clear(self, seen_before: float | None = None) -> None:
        """Clear the alarm; with ``seen_before``, only one first noticed before that time."""
        with self._lock:
            if self.reason is None:
                return
            if seen_before is not None and (self.since or 0) >= seen_before:
                return
            logger.warning("RabbitMQ accepts publishes again (was: %s)", self.reason)
            self.reason = self.since = None

    def describe(self) -> dict[str, Any] | None:
        """``{"reason", "since"}`` while blocked, else None."""
        with self._lock:
            if self.reason is None:
                return None
            since = datetime.fromtimestamp(self.since or 0, UTC)
            return {"reason": self.reason, "since": since.isoformat().replace("+00:00", "Z")}


class BoundedConnection(pyamqp.Connection):
    """An AMQP connection whose every read and write ends by ``deadline``.

    ``bound(deadline)`` before each use; a wait that reaches the deadline
    raises ``socket.timeout`` and the connection is then only good for
    ``abort()``. With ``raise_when_blocked``, a ``connection.blocked`` notice
    ends the current wait at once with ``BrokerBlocked``. Its channels are
    kombu's, so kombu's entities (queues, exchanges) declare on them.
    """

    _METHODS = {
        **amqp.Connection._METHODS,  # noqa: SLF001 - extended, as py-amqp's subclasses do
        spec.Connection.Blocked: spec.method(spec.Connection.Blocked, "s"),
    }

    def __init__(
        self,
        *,
        deadline: float,
        alarm: BrokerAlarm | None = None,
        raise_when_blocked: bool = False,
        **kwargs: Any,
    ):
        self.deadline: float | None = deadline
        self.alarm = alarm
        self.raise_when_blocked = raise_when_blocked
        self.blocked_reason: str | None = None
        super().__init__(**kwargs)

    def bound(self, deadline: float | None) -> None:
        """Every later read and write must end by ``deadline`` (None: no bound)."""
        self.deadline = deadline
        sock = getattr(self._transport, "sock", None) if self._transport else None
        if sock is not None:
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))

    def remaining(self) -> float:
        if self.deadline is None:
            return float("inf")
        return self.deadline - time.monotonic()

    def drain_events(self, timeout: float | None = None) -> None:
        # Every wait of py-amqp (handshake, channel open, confirm select,
        # declares, confirms, close-ok) comes through here.
        if self.deadline is not None:
            remaining = self.remaining()
            if remaining <= 0:
                raise TimeoutError("the broker did not answer in time")
            timeout = remaining if timeout is None else min(timeout, remaining)
        return super().drain_events(timeout=timeout)

    def _on_blocked(self, reason: Any = "") -> None:
        text = reason.decode() if isinstance(reason, bytes) else str(reason or "")
        self.blocked_reason = text or "blocked"
        if self.alarm is not None:
            self.alarm.set(self.blocked_reason)
        if self.raise_when_blocked:
            raise BrokerBlocked(self.blocked_reason)

    def _on_unblocked(self) -> None:
        self.blocked_reason = None

    def abort(self) -> None:
        """Drop the connection by closing its socket; never waits for the broker."""
        try:
            self.collect()
        except Exception:  # noqa: BLE001, S110 - dropped because it failed
            pass

    def close_within(self, deadline: float) -> None:
        """Close politely if the broker answers by ``deadline``, else drop the socket."""
        try:
            self.bound(deadline)
            self.close()
        except Exception:  # noqa: BLE001 - any failure: drop it
            self.abort()


def connect(
    app: Any,
    deadline: float,
    alarm: BrokerAlarm | None = None,
    raise_when_blocked: bool = False,
) -> BoundedConnection:
    """A connection to the app's broker, opened (TCP, TLS, handshake) by ``deadline``."""
    info = app.connection_for_write()  # parses the URL and settings; does not connect
    ssl = info.ssl
    if isinstance(ssl, dict) and "server_hostname" not in ssl:
        ssl = {**ssl, "server_hostname": info.hostname}
    remaining = max(deadline - time.monotonic(), 0.001)
    connection = BoundedConnection(
        deadline=deadline,
        alarm=alarm,
        raise_when_blocked=raise_when_blocked,
        host=f"{info.hostname}:{info.port or info.transport.default_port}",
        userid=info.userid,
        password=info.password,
        virtual_host=info.virtual_host or "/",
        login_method=info.login_method,
        ssl=ssl,
        connect_timeout=remaining,
        heartbeat=0,
    )
    try:
        connection.connect()
        connection.bound(deadline)
    except BaseException:
        connection.abort()
        raise
    return connection


class BrokerWatch:
    """One connection per process that learns of RabbitMQ's alarms as they start and end.

    Owned by the Celery app (``app.broker_watch``); started on first use in
    each process (never across a fork), as a daemon thread.
    """

    def __init__(self, app: Any, alarm: BrokerAlarm):
        self.app = app
        self.alarm = alarm
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.connected = False

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.connected = False
            threading.Thread(target=self._run, name="taskplane-broker-watch", daemon=True).start()

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                self._watch()
            except Exception as exc:  # noqa: BLE001 - reconnect whatever happened
                failures += 1
                self.connected = False
                logger.debug("broker watch reconnecting after %r", exc)
            time.sleep(min(WATCH_BACKOFF_CAP_S, 0.5 * 2 ** min(failures, 4)))

    def _watch(self) -> None:
        connection = connect(self.app, time.monotonic() + WATCH_CONNECT_TIMEOUT_S, alarm=self.alarm)
        try:
            channel = connection.channel()
            self.connected = True
            while True:
                probed_at = time.time()
                was_blocked = connection.blocked_reason is not None
                if not was_blocked:
                    connection.bound(time.monotonic() + WATCH_CONNECT_TIMEOUT_S)
                    channel.basic_publish(
                        amqp.Message(b"", delivery_mode=1),
                        exchange="",
                        routing_key=PROBE_ROUTING_KEY,
                    )
                connection.bound(None)
                try:
                    connection.drain_events(timeout=PROBE_INTERVAL_S)
                except TimeoutError:
                    pass
                if connection.blocked_reason is None:
                    # Unblocked, or a probe published after the alarm was
                    # noticed (by any connection) went through.
                    self.alarm.clear(seen_before=None if was_blocked else probed_at)
        finally:
            self.connected = False
            connection.abort()
