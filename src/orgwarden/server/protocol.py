"""One HTTP/1.1 connection: httptools parses, this enforces the limits and hands each request on.

A request whose path the direct handler wants (the gateway's data-plane paths, when the path has no
``%``-escape) becomes a ``DirectExchange`` (``direct.py``); every other one an ``AsgiCycle``
(``asgi.py``). Requests on one connection are answered one at a time, in order: a pipelined request
waits in ``queue``, with reading paused, until the one before it is answered.

Limits, each answered with the error envelope and ``connection: close``: a request head larger
than ``max_header_bytes`` or with more than ``max_headers`` headers (431); a head not complete
within ``header_timeout`` or a body that stalls for ``body_timeout`` (408); a request httptools
refuses (bad method, invalid characters, both Content-Length and Transfer-Encoding, ...) or a
WebSocket upgrade (400); a decoded path with a control character (400). A kept-alive connection
idle for ``keepalive_timeout`` is closed without a word. Deadlines are checked by one sweep a second
(``ServerState.tick``), not a timer per request. Reading pauses while a pipelined request waits or
while more than ``BODY_BUFFER_BYTES`` of a body are held unread, and resumes when they are read.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import Protocol
from urllib.parse import unquote

import httptools

from orgwarden.gateway.exchange import Headers
from orgwarden.server import wire
from orgwarden.server.asgi import AsgiCycle
from orgwarden.server.direct import DirectExchange
from orgwarden.server.state import ServerState

IDLE, HEAD, BODY, DONE = 0, 1, 2, 3  # where the parser is: between requests, in a head, a body, past one
PIPELINE, BODY_FULL = 1, 2  # why reading is paused
NEVER = float("inf")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
CONTROL_MESSAGE = "the request path contains a control character"


class Answer(Protocol):
    """What the connection needs of a request being answered (``DirectExchange``, ``AsgiCycle``)."""

    keep_alive: bool
    response_started: bool
    response_complete: bool

    def feed(self, body: bytes) -> None: ...
    def complete(self) -> None: ...
    def lost(self) -> None: ...
    async def run(self) -> None: ...


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; ``HttpProtocol.stopping`` says why."""


class HttpProtocol(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        # Deadlines are set with the loop's own clock (its time at this iteration: no system call)
        # and swept once a second by ``ServerState.tick``: a time-out fires between its length and
        # a second more, never before (the sweep's coarse ``now`` could be a second old).
        self.clock = state.loop.time
        options = state.options
        self.max_head = options.max_header_bytes
        self.max_headers = options.max_headers
        self.header_timeout = options.header_timeout
        self.body_timeout = options.body_timeout
        self.keepalive_timeout = options.keepalive_timeout
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.peer: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.url = b""
        self.headers: Headers = []
        self.head_size = 0  # request line and headers of the request being parsed
        self.head_bytes = 0  # bytes received while a head was incomplete: bounds what httptools holds
        self.expect_continue = False
        self.receiving: Answer | None = None  # the request the parser is in
        self.current: Answer | None = None  # the request being answered
        self.queue: deque[Answer] = deque()
        self.phase = IDLE
        self.deadline = self.clock() + options.header_timeout
        self.paused = 0
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.refusal: bytes | None = None  # an error answer to send once the current one is done
        self.stopping: tuple[int, str, str] | None = None
        self.refused = False
        self.closed = False

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        if len(state.connections) >= state.options.max_connections or state.shutting_down:
            limit = state.options.max_connections
            message = f"the server is at its limit of {limit} connections; retry shortly"
            if state.shutting_down:
                message = "the server is shutting down; retry shortly"
            self.transport.write(wire.error_answer(503, "overloaded_error", message, state.date))
            self.transport.close()
            self.closed = True
            return
        state.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            self.local = (str(local[0]), int(local[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        lost = [self.current, *self.queue, self.receiving]
        self.queue.clear()
        for answer in lost:
            if answer is not None:
                answer.lost()
        self._wake_drain()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    async def drain(self) -> None:
        """Wait until the client's socket takes more (or the connection is gone)."""
        if self.write_paused and not self.closed:
            waiter = self.state.loop.create_future()
            self.drain_waiters.append(waiter)
            await waiter

    def _wake_drain(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # a refusal is on its way: the rest is not read
        if self.phase <= HEAD:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refused = True  # an upgrade we do not do (h2c): answered as plain HTTP/1.1, then closed
        except httptools.HttpParserError as exc:
            status, kind, message = self.stopping or (400, "invalid_request_error", f"malformed HTTP request: {exc}")
            self._refuse(status, kind, message)
            return
        if self.phase == HEAD and self.head_bytes > self.max_head:
            self._refuse(431, "invalid_request_error", self._too_large())

    def _too_large(self) -> str:
        return f"request header fields too large: the request line and headers may hold {self.max_head} bytes"

    def _stop(self, status: int, kind: str, message: str) -> _Stop:
        self.stopping = (status, kind, message)
        return _Stop(message)

    def on_message_begin(self) -> None:
        self.receiving = None  # the one before is whole: a refusal from here on is not about it
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.expect_continue = False
        self.phase = HEAD
        self.deadline = self.clock() + self.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sizes are checked once the head is whole; until then ``data_received`` bounds what is held.
        name = name.lower()
        headers = self.headers
        headers.append((name, value))
        self.head_size += len(name) + len(value)
        if len(headers) > self.max_headers:  # each costs far more memory than its bytes: stop at once
            message = f"request header fields too large: a request may have at most {self.max_headers} headers"
            raise self._stop(431, "invalid_request_error", message)
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        if self.head_size + 4 * len(self.headers) + len(self.url) > self.max_head:
            raise self._stop(431, "invalid_request_error", self._too_large())
        state = self.state
        parser = self.parser
        self.phase = BODY
        self.head_bytes = 0
        self.deadline = self.clock() + self.body_timeout
        keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0" and not state.shutting_down
        if parser.should_upgrade():
            if any(name == b"upgrade" and value.strip().lower() == b"websocket" for name, value in self.headers):
                raise self._stop(400, "invalid_request_error", "WebSocket upgrades are not supported")
            keep_alive = False
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:
            raw_path, query = url, b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                message = "malformed HTTP request: invalid request target"
                raise self._stop(400, "invalid_request_error", message) from None
            raw_path, query = parsed.path or b"/", parsed.query or b""
        method = parser.get_method()
        answer: Answer | None = None
        direct = state.direct
        if direct is not None and b"%" not in raw_path:
            path = raw_path.decode("ascii")  # httptools lets only printable ASCII through unescaped
            if direct.wants(method, path):
                answer = DirectExchange(
                    self, direct.serve, method.decode("ascii"), path, raw_path, query, self.headers,
                    keep_alive=keep_alive, expect_continue=self.expect_continue,
                )  # fmt: skip
        if answer is None:
            path = unquote(raw_path.decode("latin-1")) if b"%" in raw_path else raw_path.decode("latin-1")
            if _CONTROL.search(path):
                raise self._stop(400, "invalid_request_error", CONTROL_MESSAGE)
            answer = AsgiCycle(
                self, method.decode("ascii"), path, raw_path, query, self.headers, parser.get_http_version(),
                keep_alive=keep_alive, expect_continue=self.expect_continue,
            )  # fmt: skip
        self.receiving = answer
        if self.current is None:
            self.current = answer
            self._start(answer)
        else:  # pipelined behind a request still being answered
            self.queue.append(answer)
            self._pause(PIPELINE)

    def on_body(self, body: bytes) -> None:
        self.deadline = self.clock() + self.body_timeout
        receiving = self.receiving
        if receiving is not None:
            receiving.feed(body)

    def on_message_complete(self) -> None:
        self.phase = DONE
        self.deadline = NEVER
        receiving = self.receiving
        if receiving is not None:
            receiving.complete()
        if self.current is None:  # answered before its body had all arrived: now the connection is idle
            self._idle()

    def _idle(self) -> None:
        if self.state.shutting_down:
            self.transport.close()
            return
        self.phase = IDLE
        self.head_bytes = 0
        self.deadline = self.clock() + self.keepalive_timeout

    # -- answering -------------------------------------------------------------------------------

    def _start(self, answer: Answer) -> None:
        task = self.state.loop.create_task(answer.run())
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_response_complete(self) -> None:
        """Called by the answer being sent once it is whole: the next request's turn."""
        self.current = None
        if self.closed or self.transport.is_closing():
            return
        state = self.state
        if self.queue:
            answer = self.current = self.queue.popleft()
            if state.shutting_down:
                answer.keep_alive = False
            self._start(answer)
            if not self.queue:
                self._resume(PIPELINE)
            return
        if self.refusal is not None:
            self.transport.write(self.refusal)
            self.transport.close()
            return
        if state.shutting_down and self.phase != BODY:
            self.transport.close()
            return
        if self.paused:
            self._resume(PIPELINE | BODY_FULL)  # the rest of an unread body is now read and dropped
        if self.phase == DONE:
            self._idle()
        elif self.phase == HEAD:  # a pipelined head was arriving meanwhile: its time starts now
            self.deadline = self.clock() + self.header_timeout

    def pause_body(self) -> None:
        self._pause(BODY_FULL)

    def resume_body(self) -> None:
        self._resume(BODY_FULL)

    def _pause(self, reason: int) -> None:
        if not self.paused and not self.closed and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed and not self.transport.is_closing():
                self.transport.resume_reading()
                if self.phase in (HEAD, BODY):  # waiting on the client again: its clock restarts
                    timeout = self.header_timeout if self.phase == HEAD else self.body_timeout
                    self.deadline = self.clock() + timeout

    def _refuse(self, status: int, kind: str, message: str) -> None:
        """Answer ``status`` with the error envelope and close; after the answer being sent, if any."""
        self.refused = True
        answer = wire.error_answer(status, kind, message, self.state.date)
        receiving, current = self.receiving, self.current
        if receiving is not None and receiving is not current:
            if receiving in self.queue:
                self.queue.remove(receiving)
            receiving.lost()  # half-received: never answered
        if current is None or (current is receiving and not current.response_started):
            if current is not None:
                current.lost()  # its body is broken: its own answer is dropped for this one
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()
        elif current is receiving:
            self.transport.close()  # mid-answer: nothing more can be said
        else:
            self.refusal = answer
            self._pause(PIPELINE)

    # -- deadlines and shutdown ------------------------------------------------------------------

    def timed_out(self) -> None:
        """The sweep found this connection past its deadline."""
        if self.closed:
            return
        phase = self.phase
        options = self.state.options
        if self.paused:
            return  # waiting on us, not on the client; the clock restarts when reading resumes
        if phase == IDLE:
            if self.current is None:
                self.transport.close()  # idle: closed without a word
        elif phase == HEAD:
            if self.current is None:
                seconds = f"{options.header_timeout:g}"
                self._refuse(408, "timeout_error", f"the request head did not arrive within {seconds} seconds")
        elif phase == BODY:
            receiving = self.receiving
            if receiving is not None and receiving.response_started:
                self.transport.close()
            else:
                seconds = f"{options.body_timeout:g}"
                self._refuse(408, "timeout_error", f"the request body stalled: nothing arrived for {seconds} seconds")

    def shutdown(self) -> None:
        """Graceful stop: close now if nothing is being answered, else after the answers due."""
        if self.current is None and not self.queue:
            self.transport.close()
            return
        current = self.current
        if current is not None and not current.response_started:
            current.keep_alive = False

    def abort(self) -> None:
        """The shutdown deadline: drop the connection, whatever it was doing."""
        self.transport.abort()
