"""The webhook job's target: a fast local HTTP sink that answers 200 and counts.

``python -m bench.sink --port P`` serves ``POST /hook`` (any path but
``/count``): read the body, answer ``200 {}``, count the request. ``GET
/count`` answers ``{"requests": <count>}`` and is not counted. One asyncio
loop with a minimal HTTP/1.1 parser (keep-alive and ``Connection: close``):
Python's ``http.server`` spends far more per request, and the sink must never
be what limits a webhook run. bench/run.py measures its ceiling with wrk
before the systems run and prints it under the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

MAX_HEAD = 64 * 1024
ANSWER = b'{"ok": true}'


class Sink:
    """The connection handler and the request count it shares across connections."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away mid-request: nothing to answer
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its answer; False once the connection should close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers.get("content-length") or 0)
        if length:
            await reader.readexactly(length)
        if method == "GET" and path == "/count":
            body = json.dumps({"requests": self.requests}).encode()
        else:
            self.requests += 1
            body = ANSWER
        close = headers.get("connection") == "close" or version == "HTTP/1.0"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n" % len(body)
            + (b"Connection: close\r\n" if close else b"")
            + b"\r\n"
            + body
        )
        await writer.drain()
        return not close


async def serve(host: str, port: int) -> None:
    sink = Sink()
    server = await asyncio.start_server(sink.handle, host, port, limit=MAX_HEAD, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sink listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()
    print(f"sink stopping after {sink.requests} requests", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
