"""A development-only HTTP peer, so webhook and log examples work out of the box.

``make run`` starts it next to the SMTP sink. It prints every POST it gets
(the webhook target) and serves a generated log at ``/sample.log`` (for
logs.summarize). Standard library only; never run it in production.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEVELS = ("INFO", "INFO", "INFO", "WARNING", "ERROR")
MESSAGES = {
    "ERROR": ("payment gateway timeout", "cache unavailable"),
    "WARNING": ("slow query",),
    "INFO": ("request served",),
}


def sample_log(lines: int = 500) -> bytes:
    out = []
    for i in range(lines):
        level = LEVELS[i % len(LEVELS)]
        choices = MESSAGES[level]
        out.append(
            f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z {level} {choices[i % len(choices)]}"
        )
    return ("\n".join(out) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1024 * 1024))
        print(
            f"webhook {self.path} job={self.headers.get('Idempotency-Key')} "
            f"body={body[:500].decode(errors='replace')}",
            flush=True,
        )
        self._reply(200, "application/json", json.dumps({"received": True}).encode())

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/sample.log":
            self._reply(200, "text/plain", sample_log())
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    port = int(os.environ.get("DEV_HTTP_SINK_PORT", "8026"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"dev HTTP sink on http://127.0.0.1:{port} (POST anything; GET /sample.log)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
