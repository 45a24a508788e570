"""The outbound HTTP client a worker process shares between its jobs.

``httpx.post()`` builds a new client for every call, and with it a TLS
context that loads the system's CA bundle: py-spy showed 84% of a
``webhook.deliver`` worker's time in ``ssl.create_default_context``
(16 deliveries/s on the threads pool). One client per process keeps one TLS
context and a pool of keep-alive connections; httpx clients are
thread-safe, so a threads pool shares it. Each request still sets its own
timeout and never follows redirects (the URL policy checked the URL asked
for, not where a redirect would lead).

httpx is imported where the client is built, not at module import: the web
imports this module (through the Celery app) but never builds a client.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

# Per target host, at most this many idle connections are kept, for this long.
KEEPALIVE_CONNECTIONS = 20
KEEPALIVE_EXPIRY_S = 15.0
MAX_CONNECTIONS = 100


def build_http_client() -> "httpx.Client":
    """A pooled client; build it in the process that uses it (after a fork, not before)."""
    import httpx

    return httpx.Client(
        follow_redirects=False,
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
    )
