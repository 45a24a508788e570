"""tests/isolated.py: nodes of a test's own can be broken without touching the shared ones.

Lives with the unit tests but starts real servers (Debian's rabbitmq-server and
redis-server, as root because Debian's wrappers su to the rabbitmq user), hence the
integration mark.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kombu import Connection, Exchange, Queue

from tests.isolated import RabbitNode, RedisNode, accepts, scratch_dir
from tests.services import RabbitMQ, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("rabbitmq-server") and shutil.which("redis-server")),
        reason="needs rabbitmq-server and redis-server installed",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="Debian's rabbitmq wrappers need root"),
]


@pytest.fixture(scope="module")
def base_dir() -> Iterator[Path]:
    """Not tmp_path: /tmp/pytest-of-root is 0700, out of the rabbitmq user's reach."""
    path = scratch_dir("tp-isolated-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def rabbit_node(base_dir: Path) -> Iterator[RabbitNode]:
    node = RabbitNode(base_dir)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def rabbit(rabbit_node: RabbitNode) -> RabbitNode:
    """The module's node, running: (re)started here so no test depends on another's order."""
    return rabbit_node.start()


def durable_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def publish(url: str, queue: Queue, body: dict) -> None:
    """Publish persistently with confirms, so the broker has the message before we go on."""
    with Connection(url, connect_timeout=5, transport_options={"confirm_publish": True}) as conn:
        conn.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            delivery_mode=2,
            serializer="json",
        )


def take(url: str, queue: Queue) -> dict | None:
    """Get and ack one message, or None when the queue is empty."""
    with Connection(url, connect_timeout=5) as conn:
        message = queue(conn.default_channel).get(no_ack=False)
        if message is None:
            return None
        message.ack()
        return message.payload


def main_broker() -> tuple[str, int]:
    parts = RabbitMQ().parts
    return parts.hostname or "127.0.0.1", parts.port or 5672


def read(url: str, key: str) -> bytes | None:
    with redis.Redis.from_url(url, socket_timeout=2) as client:
        return client.get(key)


def pgrep(pattern: str) -> list[str]:
    result = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return result.stdout.split()


def test_persistent_message_survives_app_restart(rabbit: RabbitNode) -> None:
    queue = durable_queue("tp-isolated-durable")
    publish(rabbit.url, queue, {"n": 1})
    assert take(rabbit.url, queue) == {"n": 1}
    publish(rabbit.url, queue, {"n": 2})

    rabbit.stop_app()
    assert not accepts(rabbit.amqp_port)
    assert not rabbit.is_up()

    rabbit.start_app()
    assert take(rabbit.url, queue) == {"n": 2}
    assert take(rabbit.url, queue) is None


def test_management_api_answers(rabbit: RabbitNode) -> None:
    with httpx.Client(base_url=rabbit.management_url, auth=("guest", "guest"), timeout=5) as api:
        response = wait_until(
            lambda: (r := api.get("/overview")).status_code == 200 and r,
            30,
            what="the node's management API",
        )
    assert response.json()["node"] == rabbit.nodename


def test_node_runs_with_taskplane_rabbitmq_settings(rabbit: RabbitNode) -> None:
    """deploy/rabbitmq/taskplane.conf is part of the node's config, not the machine's."""
    setting = rabbit.ctl("eval", "application:get_env(rabbit, consumer_timeout).")
    assert setting.strip() == "{ok,1800000}"
    config_files = rabbit.ctl("status").split("Config files")[1].split("Log file")[0]
    assert str(rabbit.config_file) in config_files
    assert "/etc/rabbitmq" not in config_files


def test_stop_ends_the_node_and_spares_the_main_broker(rabbit: RabbitNode) -> None:
    main_host, main_port = main_broker()
    main_was_up = accepts(main_port, main_host)
    assert pgrep(rabbit.nodename), "the VM should be findable by node name while it runs"

    rabbit.stop()
    assert pgrep(rabbit.nodename) == []
    assert not accepts(rabbit.amqp_port)
    rabbit.stop()  # idempotent

    assert accepts(main_port, main_host) or not main_was_up, "the main broker went down"


def test_redis_node_keeps_data_across_restarts(base_dir: Path) -> None:
    with RedisNode(base_dir) as node:
        with redis.Redis.from_url(node.url, socket_timeout=2) as client:
            client.set("tp:kept", "yes")

        node.restart(down_for=0.2)
        assert read(node.url, "tp:kept") == b"yes"

        node.stop()
        assert not accepts(node.port)
        assert not node.is_up()
        node.stop()  # idempotent

        node.start()
        assert read(node.url, "tp:kept") == b"yes"
    assert not accepts(node.port)
