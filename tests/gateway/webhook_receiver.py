"""A real webhook receiver for the tests: an HTTP/1.1 server on 127.0.0.1 in a thread.

It records every request (headers, body, when it arrived and whether it was answered) and answers
with the next status of ``statuses`` (200 once they run out). ``hold`` makes it keep requests
waiting until the event is set (a hung receiver); ``delay`` makes it answer late. ``tls`` (a server
``SSLContext``) makes it an https receiver.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0
    answered: bool = False


@dataclass
class Receiver:
    url: str = ""
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    hold: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def answered(self) -> list[Received]:
        return [r for r in self.snapshot() if r.answered]

    def wait_for(self, count: int, timeout: float = 10, *, answered: bool = True) -> list[Received]:
        """Block until ``count`` requests arrived (and were answered), or fail."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.answered() if answered else self.snapshot()
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(got)} requests, expected {count}")
            time.sleep(0.01)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would
        # It writes the head and the body apart: with Nagle on, a kept-alive connection would hold
        # the body until the client's delayed ACK (40 ms a request); real servers set TCP_NODELAY.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            entry = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length),
                             time.monotonic())  # fmt: skip
            with receiver.lock:
                receiver.requests.append(entry)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            if receiver.hold is not None:
                receiver.hold.wait(30)
            if receiver.delay:
                time.sleep(receiver.delay)
            body = b'{"ok":true}' if status < 400 else b'{"error":"nope"}'
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timed out) first
                return
            entry.status, entry.answered = status, True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver(*, tls: ssl.SSLContext | None = None, **options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/hooks/orgwarden?source=test"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    """Wait (without blocking the event loop) until ``condition()`` holds, or fail."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)
