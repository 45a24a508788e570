"""Publishing job messages with publisher confirms, fast.

Celery's ``send_task`` waits for a confirm of the job and then publishes the
``task-sent`` event through the same confirm-mode producer while holding the
process-wide event dispatcher's lock, so a web process's threads queue up
behind one another's confirm round trips; kombu's retry and declare wrappers
add ~1 ms of Python per submit on top. Profiling the web under load (py-spy,
see README "Benchmark") put ~35% of its CPU there.

So the web publishes itself, on py-amqp directly (neither Celery nor kombu
offers pipelined confirms or a confirm-mode channel kept per thread):

* each thread keeps a *lane*: one broker connection with a confirm-mode
  channel for jobs and a plain channel for events, so threads wait for their
  confirms side by side;
* a batch goes out on the lane in a few large writes and is confirmed once for all;
* job messages are built by Celery (``app.amqp.as_task_v2``), so workers and
  Flower see ordinary protocol-2 task messages and ``task-sent`` events;
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
from copy import copy
from typing import Any, NamedTuple

import amqp
from amqp import spec
from amqp.exceptions import ChannelError, MessageNacked, RecoverableConnectionError
from celery.events.event import Event, event_exchange
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from celery.utils.time import utcoffset
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
from tasks.core.messages import route
from tasks.core.queues import JOB_EXCHANGE

logger = logging.getLogger("taskplane.publisher")

# A dead or closed connection, a missing confirm (ConfirmTimeout is an OSError)
# or a message the broker could not route (the queue was deleted): worth one
# more try on a fresh connection, which declares the queues again. A nack is
# final, and so is a blocked broker (BrokerBlocked, checked first).
RETRYABLE_ERRORS = (OSError, RecoverableConnectionError, ChannelError)
# No second try with less time than this left: it could only time out.
MIN_RETRY_S = 0.05


# Celery's bound for the argsrepr header (celery.app.amqp.AMQP.argsrepr_maxsize).
ARGSREPR_MAXSIZE = 1024
EVENT_WRITE_TIMEOUT_S = 1.0
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
        self._local = threading.local()
        self._pid = os.getpid()
        self.hostname = anon_nodename()
        # Read once: Celery's settings lookups were a tenth of a batch's time.
        self._sent_events = bool(app.conf.task_send_sent_event)
        self._repr_levels = app.conf.task_repr_maxlevels
        self._delayed_ready = False

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
        """A protocol-2 task message (Celery's own builder) with the current trace context."""
        args = (payload,)
        message = self.app.amqp.as_task_v2(
            job_id,
            job_type,
            args=args,
            countdown=countdown,
            retries=retries,
            ignore_result=True,
            create_sent_event=self._sent_events,
            argsrepr=saferepr(args, ARGSREPR_MAXSIZE, maxlevels=self._repr_levels),
            kwargsrepr="{}",
        )
        message.headers.update(headers)
        propagate.inject(message.headers)
        return message

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
            lane = self._lane(first_deadline, wait_when_blocked)
            lane.publish(messages, first_deadline)
        except BrokerBlocked:
            self._drop_lane()
            raise
        except RETRYABLE_ERRORS as exc:
            blocked = lane is not None and lane.connection.blocked_reason is not None
            self._drop_lane()
            if blocked:  # a fresh connection would be blocked too
                raise BrokerBlocked(lane.connection.blocked_reason or "blocked") from exc
            if deadline - time.monotonic() < MIN_RETRY_S:
                raise
            logger.info("publish failed on a kept connection, retrying on a fresh one: %r", exc)
            try:
                self._lane(deadline, wait_when_blocked).publish(messages, deadline)
            except BaseException:
                self._drop_lane()
                raise
        except BaseException:
            self._drop_lane()
            raise
        self._lane(deadline, wait_when_blocked).send_sent_events(messages, self.hostname)

    def _lane(self, deadline: float, wait_when_blocked: bool) -> _Lane:
        if self._pid != os.getpid():  # forked: never share a socket with the parent
            self._local, self._pid = threading.local(), os.getpid()
        lane = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = _Lane(self, deadline)
        lane.connection.raise_when_blocked = not wait_when_blocked
        return lane

    def _drop_lane(self) -> None:
        lane = getattr(self._local, "lane", None)
        self._local.lane = None
        if lane is not None:
            lane.connection.abort()

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
        self.events: amqp.Channel | None = None
        self.events_broken = False

    def publish(self, messages: list[Outgoing], deadline: float) -> None:
        self.connection.bound(deadline)
        for queue_name in {out.queue for out in messages} - self.declared:
            self.app.amqp.queues[queue_name](self.jobs).declare()
            self.declared.add(queue_name)
        if any(out.countdown for out in messages):
            self.publisher.ensure_delayed_delivery(self.connection)
        send = self.jobs.send_method
        self.connection.bound(deadline)
        with _coalesced_writes(self.transport, len(messages) > 1, self.connection):
            for queue_name, message, countdown in messages:
                self.published += 1
                self.pending.add(self.published)
                exchange, routing_key = route(queue_name, countdown)
                # Basic.Publish as py-amqp's basic_publish sends it, minus the
                # non-blocking read it makes before every message (a system
                # call and an exception each time); confirms are collected below.
                send(
                    spec.Basic.Publish,
                    PUBLISH_ARGS,
                    (0, exchange, routing_key, True, False),
                    _amqp_message(message, delivery_mode=2),
                )
        self._wait_for_confirms(len(messages))

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

    def send_sent_events(self, messages: list[Outgoing], hostname: str) -> None:
        """``task-sent`` for Flower: best effort, unconfirmed, never fails a submit."""
        messages = [out for out in messages if getattr(out.message, "sent_event", None)]
        if self.events_broken or not messages:
            return
        try:
            exchange = self.app.conf.event_exchange
            if self.events is None:
                channel = self.connection.channel()
                # Celery's event exchange, as celery.events.event.get_exchange makes it.
                entity = copy(event_exchange)
                entity.name = exchange
                entity(channel).declare()
                self.events = channel
            pid, offset, clock = os.getpid(), utcoffset(), self.app.clock
            events = [
                Event(
                    "task-sent",
                    hostname=hostname,
                    utcoffset=offset,
                    pid=pid,
                    clock=clock.forward(),
                    queue=routing_key,
                    exchange=JOB_EXCHANGE.name,
                    routing_key=routing_key,
                    **message.sent_event,
                )
                for routing_key, message, _ in messages
            ]
            # A batch's events travel as one list, as Celery's own dispatcher
            # sends buffered task events ("task.multi"); receivers such as
            # Flower's unpack it.
            body, routing_key = (
                (events[0], "task.sent") if len(events) == 1 else (events, "task.multi")
            )
            content_type, encoding, data = dumps(body, serializer="json")
            with self.transport.having_timeout(EVENT_WRITE_TIMEOUT_S):
                self.events.send_method(
                    spec.Basic.Publish,
                    PUBLISH_ARGS,
                    (0, exchange, routing_key, False, False),
                    amqp.Message(
                        data,
                        content_type=content_type,
                        content_encoding=encoding,
                        application_headers={"hostname": hostname},
                        delivery_mode=1,
                    ),
                )
        except Exception as exc:  # noqa: BLE001 - events are optional; jobs are not
            logger.warning("task-sent events are off on this connection: %r", exc)
            self.events_broken = True


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
    return amqp.Message(
        body,
        content_type=content_type,
        content_encoding=encoding,
        application_headers=message.headers,
        delivery_mode=delivery_mode,
        **message.properties,
    )
