"""Real network peers the jobs talk to in tests: an HTTP server and an SMTP server.

Both listen on loopback in the test process, so tests can see exactly what
the worker sent.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller

from tests.services import free_port


class HttpTarget:
    """Answers webhook POSTs and serves log files.

    ``/hooks/ok`` 200; ``/hooks/status/<code>`` that status;
    ``/hooks/flaky/<key>?fail=N`` 503 for the first N requests per key, then 200;
    ``/hooks/sequence/<key>?codes=400,200`` those statuses in turn, the last one after;
    ``/logs/<name>`` a registered text body.
    """

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.logs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = urlsplit(self.path)
                status = target._status_for(path.path, parse_qs(path.query))
                with target._lock:
                    target.requests[path.path].append(
                        {
                            "headers": dict(self.headers),
                            "body": json.loads(body or b"null"),
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": %s}' % (b"true" if status < 300 else b"false"))

            def do_GET(self) -> None:  # noqa: N802
                name = urlsplit(self.path).path.removeprefix("/logs/")
                body = target.logs.get(name)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body or b"")

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _status_for(self, path: str, query: dict[str, list[str]]) -> int:
        if path.startswith("/hooks/status/"):
            return int(path.rsplit("/", 1)[1])
        if path.startswith("/hooks/sequence/"):
            codes = [int(c) for c in query.get("codes", ["200"])[0].split(",")]
            with self._lock:
                seen = len(self.requests[path])
            return codes[min(seen, len(codes) - 1)]
        if path.startswith("/hooks/flaky/"):
            fail = int(query.get("fail", ["2"])[0])
            with self._lock:
                seen = len(self.requests[path])
            return 503 if seen < fail else 200
        return 200

    def start(self) -> HttpTarget:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                sink.messages.append(
                    (list(envelope.rcpt_tos), message_from_bytes(envelope.original_content))
                )
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def find(self, job_id: str) -> Message | None:
        for _, message in self.messages:
            if message.get("X-Taskplane-Job") == job_id:
                return message
        return None
