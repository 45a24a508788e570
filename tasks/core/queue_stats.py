"""What the queues look like now: depth, consumers, pause state, dead letters.

Ready messages and consumers come from a passive queue declare, which is
current; unacknowledged counts and the queue type only from RabbitMQ's
management API, which lags a few seconds and may be unreachable (then those
fields are null and the rest still answers).
"""

import base64
import json
import logging
import time
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from amqp.exceptions import ChannelError

from tasks.core.broker_link import connect
from tasks.core.queues import dead_letter_queue_name
from tasks.core.switches import enabled_queues, paused_queues

logger = logging.getLogger("taskplane.queues")
# Passive declares of every queue and its dead letters: a few round trips.
DECLARE_TIMEOUT_S = 2.0


def management_base(app: Any) -> tuple[str, tuple[str, str], str]:
    """(API base URL, credentials, vhost) from settings or the broker URL."""
    broker = urlsplit(app.conf.broker_url)
    vhost = unquote(broker.path[1:]) if len(broker.path) > 1 else "/"
    auth = (unquote(broker.username or "guest"), unquote(broker.password or "guest"))
    configured = app.conf.taskplane_management_url
    if configured:
        parts = urlsplit(configured)
        if parts.username:
            auth = (unquote(parts.username), unquote(parts.password or ""))
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}"
        return (base if base.endswith("/api") else base + "/api"), auth, vhost
    return f"http://{broker.hostname}:15672/api", auth, vhost


def management_stats(app: Any, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
    """Per-queue figures only the management API has (unacked counts, queue type).

    One GET with the standard library's client: it is the web's only outbound
    HTTP call, and importing httpx (with the CLI extras a dev install brings)
    would add ~7 MB to every web process (README "Benchmark").
    """
    base, (user, password), vhost = management_base(app)
    if urlsplit(base).scheme not in ("http", "https"):
        logger.warning("RabbitMQ management URL is not http(s): %s", base)
        return {}
    query = urlencode({"columns": "name,messages_unacknowledged,type"})
    url = f"{base}/queues/{quote(vhost, safe='')}?{query}"
    request = urllib.request.Request(url)  # noqa: S310 - the scheme is checked above
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            queues = json.load(response)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        logger.warning("RabbitMQ management API unavailable: %s", exc)
        return {}
    return {q["name"]: q for q in queues}


def declared_counts(
    app: Any, names: list[str], timeout_s: float = DECLARE_TIMEOUT_S
) -> dict[str, tuple[int, int] | None]:
    """(ready messages, consumers) per queue, None for a queue that does not exist yet.

    Ends within ``timeout_s`` whatever the broker does (a frozen one must not
    hang ``GET /queues`` or a metrics scrape); raises OSError past it.
    """
    counts: dict[str, tuple[int, int] | None] = {}
    deadline = time.monotonic() + timeout_s
    conn = connect(app, deadline)
    try:
        channel = conn.channel()
        for name in names:
            try:
                _, ready, consumers = channel.queue_declare(name, passive=True)
                counts[name] = (ready, consumers)
            except ChannelError:  # 404: the broker closed the channel
                counts[name] = None
                channel = conn.channel()
    finally:
        conn.close_within(deadline)
    return counts


def queue_overview(app: Any) -> list[dict[str, Any]]:
    names = [q.name for q in app.conf.task_queues]
    counts = declared_counts(app, names + [dead_letter_queue_name(n) for n in names])
    stats = management_stats(app)
    paused = paused_queues(app)
    enabled = set(enabled_queues(app))
    overview = []
    for name in names:
        ready, consumers = counts.get(name) or (None, None)
        dead = counts.get(dead_letter_queue_name(name))
        overview.append(
            {
                "name": name,
                "type": stats.get(name, {}).get("type"),
                "enabled": name in enabled,
                "paused": name in paused,
                "ready": ready,
                "unacked": stats.get(name, {}).get("messages_unacknowledged"),
                "consumers": consumers,
                "dead": dead[0] if dead else 0,
            }
        )
    return overview
