"""The ceiling: what raw AMQP from Python (pika) gets out of this RabbitMQ.

Every measurement runs on a fresh durable quorum queue (the queue type of
Taskplane's job queues) in a vhost of its own, with persistent messages of
about the size of a Celery task message:

- ``publish_sync``: BlockingConnection in confirm mode; each basic_publish
  waits for its confirm (the analogue of one single submit at a time).
- ``publish_window``: SelectConnection in confirm mode, keeping up to
  ``window`` (1,000) publishes unconfirmed and topping the window up from the
  ack/nack callback (``confirm_delivery``); BlockingConnection cannot do this,
  its confirm mode is synchronous.
- ``consume``: BlockingConnection, prefetch 100, manual ack of every message,
  from a queue filled beforehand (untimed) with the windowed publisher.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pika
from pika.spec import Basic

from bench.report import percentile, rate

QUEUE_ARGS = {"x-queue-type": "quorum"}
# About the size of a Celery protocol-2 message body for a small job.
BODY = b'{"payload": {"data": "' + b"x" * 480 + b'"}}'
PERSISTENT = pika.BasicProperties(
    delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json"
)


def _params(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.blocked_connection_timeout = 30
    params.socket_timeout = 10
    return params


def publish_sync(url: str, queue: str, count: int, timeout_s: float) -> dict[str, Any]:
    """Publish ``count`` persistent messages, waiting for each confirm."""
    connection = pika.BlockingConnection(_params(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments=QUEUE_ARGS)
        channel.confirm_delivery()
        latencies: list[float] = []
        deadline = time.monotonic() + timeout_s
        began = time.perf_counter()
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            channel.basic_publish("", queue, BODY, PERSISTENT)  # raises on a nack
            latencies.append((time.perf_counter() - started) * 1000.0)
        seconds = time.perf_counter() - began
    finally:
        connection.close()
    return {
        "count": len(latencies),
        "seconds": seconds,
        "per_s": rate(len(latencies), seconds),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "truncated": len(latencies) < count,
    }


def publish_window(
    url: str, queue: str, count: int, window: int, timeout_s: float
) -> dict[str, Any]:
    """Publish ``count`` persistent messages with up to ``window`` confirms outstanding."""
    state: dict[str, Any] = {
        "published": 0,
        "confirmed": 0,
        "nacked": 0,
        "began": None,
        "ended": None,
        "error": None,
    }
    outstanding: collections.deque[int] = collections.deque()

    def pump(channel: Any) -> None:
        while state["published"] < count and len(outstanding) < window:
            channel.basic_publish("", queue, BODY, PERSISTENT)
            state["published"] += 1
            outstanding.append(state["published"])  # delivery tags count from 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        before = len(outstanding)
        if method.multiple:
            while outstanding and outstanding[0] <= tag:
                outstanding.popleft()
        elif outstanding and outstanding[0] == tag:
            outstanding.popleft()
        elif tag in outstanding:
            outstanding.remove(tag)
        settled = before - len(outstanding)
        state["confirmed"] += settled
        if isinstance(method, Basic.Nack):
            state["nacked"] += settled
        if state["confirmed"] >= count:
            state["ended"] = time.perf_counter()
            connection.close()
        else:
            pump(channel_holder[0])

    channel_holder: list[Any] = []

    def on_channel(channel: Any) -> None:
        channel_holder.append(channel)

        def confirmed_mode(_: Any) -> None:
            state["began"] = time.perf_counter()
            pump(channel)

        channel.queue_declare(
            queue,
            durable=True,
            arguments=QUEUE_ARGS,
            callback=lambda _: channel.confirm_delivery(on_confirm, callback=confirmed_mode),
        )

    def on_open_error(_: Any, error: Exception) -> None:
        state["error"] = f"cannot connect: {error}"
        connection.ioloop.stop()

    def on_closed(_: Any, reason: Exception) -> None:
        if state["ended"] is None and state["error"] is None:
            state["error"] = f"connection closed: {reason}"
        connection.ioloop.stop()

    def on_timeout() -> None:
        state["error"] = f"timed out after {timeout_s}s ({state['confirmed']} confirmed)"
        connection.close()

    connection = pika.SelectConnection(
        _params(url),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=on_open_error,
        on_close_callback=on_closed,
    )
    connection.ioloop.call_later(timeout_s, on_timeout)
    connection.ioloop.start()
    if state["error"] and state["ended"] is None:
        raise RuntimeError(f"windowed publish: {state['error']}")
    seconds = state["ended"] - state["began"]
    return {
        "count": state["confirmed"],
        "nacked": state["nacked"],
        "seconds": seconds,
        "per_s": rate(state["confirmed"], seconds),
        "window": window,
    }


def consume(url: str, queue: str, count: int, prefetch: int, timeout_s: float) -> dict[str, Any]:
    """Consume ``count`` messages with manual acks (one per message) at ``prefetch``."""
    connection = pika.BlockingConnection(_params(url))
    received = 0
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        deadline = time.monotonic() + timeout_s
        began = time.perf_counter()
        for method, _properties, _body in channel.consume(queue, inactivity_timeout=5):
            if method is None or time.monotonic() > deadline:
                break
            channel.basic_ack(method.delivery_tag)
            received += 1
            if received >= count:
                break
        seconds = time.perf_counter() - began
        channel.cancel()
    finally:
        connection.close()
    return {
        "count": received,
        "seconds": seconds,
        "per_s": rate(received, seconds),
        "prefetch": prefetch,
        "truncated": received < count,
    }
