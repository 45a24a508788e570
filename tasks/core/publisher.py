"""Publishing job messages with publisher confirms, fast.

Celery's ``send_task`` waits for a confirm of the job and then publishes the
``task-sent`` event through the same confirm-mode producer while holding the
process-wide event dispatcher's lock, so a web process's threads queue up
behind one another's confirm round trips; kombu's retry and declare wrappers
add ~1 ms of Python per submit on top. Profiling the web under load (py-spy,
see README "Benchmark") put ~35% of its CPU there.

So the web publishes itself, on py-amqp directly (neither Celery nor kombu
offers pipelined confirms or a confirm-mode channel kept per thread):

* a publish takes a *lane*: one broker connection with a confirm-mode
  channel for jobs, so threads wait for their confirms side by side. Lanes
  are pooled per process, most recently used first; an idle one is closed
  after ``LANE_IDLE_S``: connections follow how many publishes run at once,
  not how many threads the web has (gunicorn gives wait slots threads of
  their own, app/waits.py);
* a batch goes out on the lane in a few large writes and is confirmed once for all;
* job messages are built by Celery (``app.amqp.as_task_v2``) or derived from
  one it built (tasks/core/message_template), so workers and Flower see
  ordinary protocol-2 task messages;
* ``task-sent`` events of confirmed messages are queued and published by one
  thread per process, batched, on its own connection (tasks/core/sent_events):
  a submit never waits for them;
* messages are published ``mandatory``: a message no queue would take comes
  back instead of being confirmed, so a 202 means a queue holds the job.

A lane that fails in any way is dropped, never reused: a confirm that arrives
late can never be taken for the confirm of a later publish. Every wait on a
lane (connecting, opening channels, declaring, writing, confirms) ends by the
publish's deadline, and a lane is dropped by closing its socket, never by
waiting for the broker (see tasks/core/broker_link). While RabbitMQ blocks
publishers (a memory or disk alarm), the web's publishes fail at once with
``BrokerBlocked``; a worker's retry waits through the block, up to its bound.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import amqp
from amqp import serialization, spec
from amqp.exceptions import ChannelError, MessageNacked, RecoverableConnectionError
from celery.events.event import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from celery.utils.time import add_seconds_to_datetime, maybe_make_aware, utcoffset
from kombu.serialization import dumps
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)
from opentelemetry import propagate

from tasks.core.broker_link import (
    BoundedConnection,
    BrokerAlarm,
    BrokerBlocked,
    BrokerWatch,
    connect,
)
from tasks.core.message_template import MessageTemplate, TemplatedMessage, argsrepr
from tasks.core.messages import route
from tasks.core.queues import JOB_EXCHANGE
from tasks.core.sent_events import SentEvents

logger = logging.getLogger("taskplane.publisher")
# Idle lanes a process keeps: at most this many, and none unused for longer
# than LANE_IDLE_S. Steady load reuses its lanes (opening a connection costs
# the broker more than a publish); a burst's extra lanes close again after it.
IDLE_LANES = 32
LANE_IDLE_S = 30.0

# A dead or closed connection, a missing confirm (ConfirmTimeout is an OSError)
# or a message the broker could not route (the queue was deleted): worth one
# more try on a fresh connection, which declares the queues again. A nack is
# final, and so is a blocked broker (BrokerBlocked, checked first).
RETRYABLE_ERRORS = (OSError, RecoverableConnectionError, ChannelError)
# No second try with less time than this left: it could only time out.
MIN_RETRY_S = 0.05


# Celery's bound for the argsrepr header (celery.app.amqp.AMQP.argsrepr_maxsize).
ARGSREPR_MAXSIZE = 1024
# Job messages are JSON and persistent; a template encodes these once.
JOB_WIRE = {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2}
# Templates kept per process (job type, retries, Taskplane headers): a handful.
MAX_TEMPLATES = 64
# A batch is written in chunks of about this size: few system calls, and the
# web's memory stays flat however big the batch.
COALESCE_BYTES = 256 * 1024
PUBLISH_ARGS = "Bssbb"  # Basic.Publish: ticket, exchange, routing key, mandatory, immediate


class Outgoing(NamedTuple):
    """One message to publish: its queue, the message and its delay in whole seconds.

    ``message`` is a task message built by ``JobPublisher.build``, or an
    ``amqp.Message`` published as it is (a dead letter replayed unchanged).
    """

    queue: str
    message: Any
    countdown: int | None = None


class ConfirmTimeout(TimeoutError):
    """The broker did not confirm every message in time (an OSError, like any timeout)."""


class JobPublisher:
    """Publishes job messages and returns once RabbitMQ confirmed all of them."""

    def __init__(
        self, app: Any, alarm: BrokerAlarm | None = None, watch: BrokerWatch | None = None
    ):
        self.app = app
        self.alarm = alarm if alarm is not None else BrokerAlarm()
        # The web watches for alarms; without a watch, nobody would clear one.
        self.watch = watch
        self._idle: list[tuple[_Lane, float]] = []  # (lane, when it was given back)
        self._idle_lock = threading.Lock()
        self._pid = os.getpid()
        self.hostname = anon_nodename()
        # Read once: Celery's settings lookups were a tenth of a batch's time.
        self._sent_events = bool(app.conf.task_send_sent_event)
        self._repr_levels = app.conf.task_repr_maxlevels
        self._delayed_ready = False
        self._template_cache: dict[tuple, MessageTemplate] = {}
        self._templates_pid = os.getpid()
        self.sent_events = SentEvents(app, self.alarm, self.hostname)

    def build(
        self,
        job_id: str,
        job_type: str,
        payload: dict,
        headers: dict,
        *,
        countdown: int | None = None,
        retries: int = 0,
    ) -> Any:
        """A protocol-2 task message with the current trace context.

        The first message of its kind in this process is Celery's own
        (``build_by_celery``); later ones are derived from it, identical to
        what Celery would build (tasks/core/message_template).
        """
        args = (payload,)
        shown = argsrepr(args, ARGSREPR_MAXSIZE, self._repr_levels)
        trace: dict[str, str] = {}
        propagate.inject(trace)
        key = _template_key(job_type, retries, headers)
        template = self._templates().get(key) if key is not None else None
        if template is not None and template.fits(trace):
            return template.message(job_id, args, shown, self._eta(countdown), trace)
        message = self._celery_message(job_id, job_type, args, shown, countdown, retries)
        message.headers.update(headers)
        if key is not None:
            self._remember(key, message)
        message.headers.update(trace)
        return message

    def build_by_celery(
        self,
        job_id: str,
        job_type: str,
        payload: dict,
        headers: dict,
        *,
        countdown: int | None = None,
        retries: int = 0,
    ) -> Any:
        """``build`` without templates: Celery builds every field (``as_task_v2``, ``saferepr``)."""
        args = (payload,)
        argsrepr = saferepr(args, ARGSREPR_MAXSIZE, maxlevels=self._repr_levels)
        message = self._celery_message(job_id, job_type, args, argsrepr, countdown, retries)
        message.headers.update(headers)
        propagate.inject(message.headers)
        return message

    def _celery_message(
        self,
        job_id: str,
        job_type: str,
        args: tuple,
        argsrepr: str,
        countdown: int | None,
        retries: int,
    ) -> Any:
        return self.app.amqp.as_task_v2(
            job_id,
            job_type,
            args=args,
            countdown=countdown,
            retries=retries,
            ignore_result=True,
            create_sent_event=self._sent_events,
            argsrepr=argsrepr,
            kwargsrepr="{}",
        )

    def _templates(self) -> dict[tuple, MessageTemplate]:
        if self._templates_pid != os.getpid():  # origin names the process
            self._template_cache, self._templates_pid = {}, os.getpid()
        return self._template_cache

    def _remember(self, key: tuple, message: Any) -> None:
        """Keep a Celery-built message (without its trace headers) as its kind's template."""
        templates = self._templates()
        if len(templates) >= MAX_TEMPLATES:
            templates.clear()
        try:
            templates[key] = MessageTemplate(message, JOB_WIRE)
        except ValueError as exc:  # not what Celery builds today: no template, no harm
            logger.warning("no message template for %s: %s", key[0], exc)

    def _eta(self, countdown: int | None) -> str | None:
        """The eta header of a countdown, as ``as_task_v2`` computes it."""
        if not countdown:
            return None
        self.app.amqp._verify_seconds(countdown, "countdown")  # noqa: SLF001 - Celery's own check
        now, timezone = self.app.now(), self.app.timezone
        return maybe_make_aware(add_seconds_to_datetime(now, countdown), tz=timezone).isoformat()

    def publish(
        self,
        messages: list[Outgoing],
        timeout_s: float,
        *,
        wait_when_blocked: bool = False,
    ) -> None:
        """Publish the messages, all confirmed within ``timeout_s``.

        Returns or raises within ``timeout_s`` (plus a few milliseconds),
        whatever the broker does. While the broker blocks publishers, raises
        ``BrokerBlocked`` at once, unless ``wait_when_blocked`` (a worker
        publishing a retry: its job's message stays unacked meanwhile, so
        waiting loses nothing). A message with a countdown is delayed by
        Celery's native delayed delivery.

        One more try on a fresh connection if the first fails on the
        connection or is not confirmed in time: a kept connection can be dead
        without knowing it (a broker restart or failover, a proxy's or load
        balancer's idle cut; these connections run without heartbeats, as
        Celery's producer connections do). A message that did arrive the
        first time arrives twice under the same job id; the worker runs a job
        id once (see tasks/core/jobstore, _START).
        """
        started = time.monotonic()
        deadline = started + timeout_s
        if self.watch is not None:
            self.watch.ensure_started()
        if not wait_when_blocked and self.alarm.reason is not None:
            raise BrokerBlocked(self.alarm.reason)
        # A slow broker is the likelier cause of a missing confirm, so the
        # first try gets most of the time; errors on a dead one come fast. A
        # publish that waits through blocks may spend it all on one connection.
        first_deadline = deadline if wait_when_blocked else started + timeout_s * 2 / 3
        lane = None
        try:
            lane = self._take(first_deadline, wait_when_blocked)
            lane.publish(messages, first_deadline)
        except BrokerBlocked:
            _discard(lane)
            raise
        except RETRYABLE_ERRORS as exc:
            blocked = lane is not None and lane.connection.blocked_reason is not None
            _discard(lane)
            if blocked:  # a fresh connection would be blocked too
                raise BrokerBlocked(lane.connection.blocked_reason or "blocked") from exc
            if deadline - time.monotonic() < MIN_RETRY_S:
                raise
            logger.info("publish failed on a kept connection, retrying on a fresh one: %r", exc)
            lane = None
            try:
                lane = self._take(deadline, wait_when_blocked, fresh=True)
                lane.publish(messages, deadline)
            except BaseException:
                _discard(lane)
                raise
        except BaseException:
            _discard(lane)
            raise
        self._give_back(lane)
        if self._sent_events:
            self._announce(messages)

    def _announce(self, messages: list[Outgoing]) -> None:
        """Queue the confirmed messages' ``task-sent`` events; never fails the publish."""
        try:
            self.sent_events.put(sent_events(self.app, messages, self.hostname))
        except Exception as exc:  # noqa: BLE001 - events are optional; jobs are not
            logger.warning("task-sent events not queued: %r", exc)

    def _take(self, deadline: float, wait_when_blocked: bool, fresh: bool = False) -> _Lane:
        """An idle lane (the most recently used: its connection is the likeliest alive), or a
        new one; the caller gives it back after a publish that went well, or discards it."""
        lane = None
        with self._idle_lock:
            if self._pid != os.getpid():  # forked: never share a socket with the parent
                self._idle, self._pid = [], os.getpid()
            if self._idle and not fresh:
                lane, _ = self._idle.pop()
        if lane is None:
            lane = _Lane(self, deadline)
        lane.connection.raise_when_blocked = not wait_when_blocked
        return lane

    def _give_back(self, lane: _Lane) -> None:
        now = time.monotonic()
        stale: list[_Lane] = []
        with self._idle_lock:
            # The least recently used come first; those idle too long go.
            while self._idle and (
                len(self._idle) >= IDLE_LANES or now - self._idle[0][1] > LANE_IDLE_S
            ):
                stale.append(self._idle.pop(0)[0])
            if self._pid == os.getpid():
                self._idle.append((lane, now))
            else:
                stale.append(lane)
        for old in stale:
            old.connection.abort()

    def ensure_delayed_delivery(self, connection: BoundedConnection) -> None:
        """Declare Celery's native delayed-delivery exchanges once per process.

        Workers declare them when they start; a web that schedules a job before
        any worker ever ran must not publish into an exchange that is not there.
        """
        if self._delayed_ready:
            return
        declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
        for queue in self.app.conf.task_queues:
            queue(connection.channel()).declare()
            bind_queue_to_native_delayed_delivery_exchange(connection, queue)
        self._delayed_ready = True


def _discard(lane: _Lane | None) -> None:
    """Drop a lane that failed: its socket closed at once, never waited on."""
    if lane is not None:
        lane.connection.abort()


class _Lane:
    """One thread's broker connection: a confirm-mode channel for jobs, one for events."""

    def __init__(self, publisher: JobPublisher, deadline: float):
        self.publisher = publisher
        self.app = publisher.app
        self.connection = connect(self.app, deadline, alarm=publisher.alarm)
        try:
            self.transport = self.connection.transport
            self.jobs: amqp.Channel = self.connection.channel()
            self.jobs.confirm_select()
        except BaseException:
            self.connection.abort()
            raise
        self.jobs.events["basic_ack"].add(self._on_ack)
        self.jobs.events["basic_nack"].add(self._on_nack)
        self.published = 0  # delivery tags used so far on the jobs channel
        self.pending: set[int] = set()
        self.nacked: list[int] = []
        self.declared: set[str] = set()
        self.publish_args: dict[tuple[str, str], bytes] = {}

    def publish(self, messages: list[Outgoing], deadline: float) -> None:
        self.connection.bound(deadline)
        for queue_name in {out.queue for out in messages} - self.declared:
            self.app.amqp.queues[queue_name](self.jobs).declare()
            self.declared.add(queue_name)
        if any(out.countdown for out in messages):
            self.publisher.ensure_delayed_delivery(self.connection)
        self.connection.bound(deadline)
        with _coalesced_writes(self.transport, len(messages) > 1, self.connection):
            for queue_name, message, countdown in messages:
                self.published += 1
                self.pending.add(self.published)
                self._send_publish(route(queue_name, countdown), _amqp_message(message, 2))
        self._wait_for_confirms(len(messages))

    def _send_publish(self, destination: tuple[str, str], message: amqp.Message) -> None:
        """Basic.Publish as py-amqp's ``basic_publish`` sends it, with fewer steps.

        Without the non-blocking read it makes before every message (a system
        call and an exception each time; confirms are collected after the
        batch), and with the method's arguments encoded once per exchange and
        routing key rather than per message (``send_method`` encodes them
        each time, then hands them to the same frame writer).
        """
        args = self.publish_args.get(destination)
        if args is None:
            exchange, routing_key = destination
            args = serialization.dumps(PUBLISH_ARGS, (0, exchange, routing_key, True, False))
            self.publish_args[destination] = args
        connection = self.jobs.connection  # as send_method: None once the channel closed
        if connection is None:
            raise RecoverableConnectionError("connection already closed")
        try:
            connection.frame_writer(1, self.jobs.channel_id, spec.Basic.Publish, args, message)
        except StopIteration as exc:  # as send_method: the writer of a closed connection
            raise RecoverableConnectionError("connection already closed") from exc

    def _wait_for_confirms(self, count: int) -> None:
        # Waits end at the connection's deadline (socket.timeout, an OSError);
        # a connection.blocked notice ends them at once (BrokerBlocked) unless
        # this publish waits through blocks.
        while self.pending and not self.nacked:
            if self.connection.remaining() <= 0:
                raise ConfirmTimeout(f"{len(self.pending)} of {count} messages not confirmed")
            try:
                self.jobs.wait([spec.Basic.Ack, spec.Basic.Nack])
            except BrokerBlocked:
                raise
            except TimeoutError as exc:
                raise ConfirmTimeout(
                    f"{len(self.pending)} of {count} messages not confirmed"
                ) from exc
        if self.nacked:
            raise MessageNacked(f"the broker refused {len(self.nacked)} of {count} messages")

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.pending = {tag for tag in self.pending if tag > delivery_tag}
        else:
            self.pending.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool, *_: Any) -> None:
        self.nacked.append(delivery_tag)
        self._on_ack(delivery_tag, multiple)


def sent_events(app: Any, messages: list[Outgoing], hostname: str) -> list[Event]:
    """The ``task-sent`` events of confirmed messages, stamped now (clock and timestamp)."""
    sent = [out for out in messages if getattr(out.message, "sent_event", None)]
    if not sent:
        return []
    pid, offset, clock = os.getpid(), utcoffset(), app.clock
    return [
        Event(
            "task-sent",
            hostname=hostname,
            utcoffset=offset,
            pid=pid,
            clock=clock.forward(),
            queue=queue,
            exchange=JOB_EXCHANGE.name,
            routing_key=queue,
            **message.sent_event,
        )
        for queue, message, _ in sent
    ]


def _template_key(job_type: str, retries: int, headers: dict) -> tuple | None:
    """What a template is for: the job type, retries and Taskplane headers (None: no template)."""
    try:
        key = (job_type, retries, tuple(headers.items()))
        hash(key)
    except TypeError:
        return None
    return key


@contextmanager
def _coalesced_writes(
    transport: Any, enabled: bool, connection: BoundedConnection
) -> Iterator[None]:
    """Send a batch's frames in a few large writes instead of one per message.

    py-amqp writes every message with its own system call; its transport has
    no buffering of its own, so its writer is pointed at a buffer for the
    duration of the batch. Each write ends by the connection's deadline: a
    broker that stopped reading (a memory alarm blocks publishers) must not
    hang the request.
    """
    if not enabled:
        yield
        return
    frames = bytearray()
    send = transport._write  # noqa: SLF001

    def flush() -> None:
        connection.bound(connection.deadline)
        send(frames)
        frames.clear()

    def collect(frame: Any) -> None:
        frames.extend(frame)  # a copy: py-amqp reuses its frame buffer
        if len(frames) >= COALESCE_BYTES:
            flush()

    transport._write = collect  # noqa: SLF001
    try:
        yield
    finally:
        transport._write = send  # noqa: SLF001
    if frames:
        flush()


def _amqp_message(message: Any, delivery_mode: int) -> amqp.Message:
    if isinstance(message, amqp.Message):
        return message
    content_type, encoding, body = dumps(message.body, serializer="json")
    wire = {"content_type": content_type, "content_encoding": encoding}
    if (
        isinstance(message, TemplatedMessage)
        and {**wire, "delivery_mode": delivery_mode} == JOB_WIRE
    ):
        return message.amqp_message(
            body, **JOB_WIRE, application_headers=message.headers, **message.properties
        )
    return amqp.Message(
        body,
        content_type=content_type,
        content_encoding=encoding,
        application_headers=message.headers,
        delivery_mode=delivery_mode,
        **message.properties,
    )
