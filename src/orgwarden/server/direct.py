"""A data-plane request served straight on the connection, without ASGI.

For ``/v1/messages`` and the other data-plane paths, ``HttpProtocol`` builds one of these instead
of an ASGI scope and cycle, and runs ``Gateway.serve`` on it. What that saves per request (measured
in bench/RESULTS.md): the scope dict, the ``receive``/``send`` message dicts and their checks, and
a second coroutine around the app; the client's forwarded address is worked out only when the
audit trail asks for it.

On the wire: the ``date`` line first, ``connection: close`` when the connection will close, a whole
answer with ``content-length`` in one write, a streamed one chunked with its head held until its
first piece (one write, one wake-up for the client). ``Expect: 100-continue`` is answered when the
body is first read. A body the gateway is not reading yet is held up to ``BODY_BUFFER_BYTES``, then
the connection stops reading until it is read (the key lookup may wait on the database); a body
taken piece by piece (``stream_body``: uploads) is held so, at most, between pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from orgwarden.gateway.exchange import BodyTooLarge, ClientGone, Exchange, Headers
from orgwarden.server import wire
from orgwarden.server.options import BODY_BUFFER_BYTES

if TYPE_CHECKING:
    from orgwarden.server.protocol import HttpProtocol

_LAST_CHUNK = wire.LAST_CHUNK
DISCONNECTED = "the client disconnected"  # the message of the cancellation ``until_disconnect`` makes


class DirectExchange:
    __slots__ = (
        "_guarded",
        "_held",
        "_protocol",
        "_serve",
        "_waiter",
        "chunks",
        "disconnected",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "more_body",
        "path",
        "query",
        "raw_path",
        "reading",
        "response_complete",
        "response_started",
        "size",
    )

    def __init__(
        self,
        protocol: HttpProtocol,
        serve: Callable[[Exchange], Awaitable[None]],
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: Headers,
        *,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self._protocol = protocol
        self._serve = serve
        self.method = method
        self.path = path
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunks: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.reading = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self._held: bytes | None = None  # a streamed answer's head, until its first piece
        self._waiter: asyncio.Future[None] | None = None
        self._guarded: asyncio.Task[None] | None = None  # cancelled if the client leaves (until_disconnect)

    async def run(self) -> None:
        try:
            await self._serve(self)
        finally:
            if not self.response_complete:  # cancelled mid-answer (shutdown): the client must not wait
                self.response_complete = True
                self._protocol.transport.close()

    # -- fed by the protocol ---------------------------------------------------------------------

    def feed(self, body: bytes) -> None:
        if not self.response_complete:
            self.chunks.append(body)
            self.size += len(body)
            if not self.reading and self.size > BODY_BUFFER_BYTES:
                self._protocol.pause_body()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def complete(self) -> None:
        if not self.response_complete:
            self.more_body = False
            self._wake()

    def lost(self) -> None:
        if not self.response_complete:
            self.disconnected = True
        self._wake()
        guarded, self._guarded = self._guarded, None
        if guarded is not None:
            guarded.cancel(DISCONNECTED)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._protocol.state.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- Exchange --------------------------------------------------------------------------------

    def client_host(self) -> str | None:
        protocol = self._protocol
        host = protocol.peer[0] if protocol.peer else None
        forwarded = [value for name, value in self.headers if name == b"x-forwarded-for"]
        return protocol.state.proxies.client(host, forwarded) if forwarded else host

    async def read_body(self, limit: int) -> bytes:
        protocol = self._protocol
        if self.more_body and self.expect_continue and not protocol.transport.is_closing():
            protocol.transport.write(wire.CONTINUE)
        self.expect_continue = False
        if self.more_body:
            self.reading = True
            protocol.resume_body()
        while True:
            if self.size > limit:
                raise BodyTooLarge
            if not self.more_body:
                chunks = self.chunks
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self.disconnected:
                raise ClientGone
            await self._wait()

    async def stream_body(self) -> AsyncIterator[bytes]:
        # ``reading`` stays False: ``feed`` pauses the connection once more than BODY_BUFFER_BYTES
        # wait here untaken, and taking them resumes it, so an upload moves at the upstream's pace.
        protocol = self._protocol
        if self.more_body and self.expect_continue and not protocol.transport.is_closing():
            protocol.transport.write(wire.CONTINUE)
        self.expect_continue = False
        while True:
            chunks = self.chunks
            if chunks:
                self.chunks, self.size = [], 0
                protocol.resume_body()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                continue
            if not self.more_body:
                return
            if self.disconnected:
                raise ClientGone
            await self._wait()

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        await self._write(self._head(status, headers, b"content-length: %d\r\n" % len(body), body))
        self._complete()

    async def start(self, status: int, headers: Headers) -> None:
        self._held = self._head(status, headers, b"transfer-encoding: chunked\r\n")

    async def send(self, chunk: bytes) -> None:
        if chunk:
            out = b"%x\r\n%b\r\n" % (len(chunk), chunk)
            held, self._held = self._held, None
            await self._write(held + out if held else out)

    async def finish(self, last: bytes = b"") -> None:
        held, self._held = self._held, None
        out = b"%x\r\n%b\r\n%b" % (len(last), last, _LAST_CHUNK) if last else _LAST_CHUNK
        await self._write(held + out if held else out)
        self._complete()

    async def until_disconnect(self, work: Coroutine[Any, Any, None]) -> bool:
        # ``work`` runs in this task, no second one or ``asyncio.wait``: ``lost`` cancels the task
        # while it is suspended inside ``work`` (the guard is set only then), and the cancellation
        # is told from any other (a shutdown) by its message.
        if self.disconnected:
            work.close()
            return True
        task = asyncio.current_task()
        assert task is not None
        self._guarded = task
        try:
            await work
        except asyncio.CancelledError as exc:
            if exc.args != (DISCONNECTED,) or task.uncancel() > 0:
                raise
            return True
        except OSError:  # the server refused a send: the client is gone
            return True
        finally:
            self._guarded = None
        return False

    # -- writing ---------------------------------------------------------------------------------

    def _head(self, status: int, headers: Headers, framing: bytes, body: bytes = b"") -> bytes:
        """The status line and headers, and ``body`` after them: one piece, joined once. Header
        lines cannot be forged: what the gateway relays was parsed by llhttp, which refuses control
        characters in names and values, and the rest is its own ids, numbers and dates; as a last
        guard the head must hold exactly one CR and one LF per line (``wire.header_lines``)."""
        self.response_started = True
        lines = wire.header_lines(headers)
        close = b"" if self.keep_alive else b"connection: close\r\n"
        protocol = self._protocol
        return b"".join((wire.STATUS_LINE[status], protocol.state.date, lines, framing, close, b"\r\n", body))

    async def _write(self, data: bytes) -> None:
        """Write unless the client is gone (what cannot be sent is dropped)."""
        protocol = self._protocol
        if protocol.write_paused and not self.disconnected:
            await protocol.drain()
        if not self.disconnected:
            protocol.transport.write(data)

    def _complete(self) -> None:
        self.response_complete = True
        self.chunks = []
        protocol = self._protocol
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
