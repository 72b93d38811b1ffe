"""A data-plane request served straight on the HTTP/1.1 connection, without ASGI.

For ``/v1/messages`` and the other data-plane paths, ``http_protocol.Protocol`` builds one of these
instead of an ASGI scope and cycle, and runs ``Gateway.serve`` on it. What that saves per request,
measured in bench/RESULTS.md: the scope dict, the ``receive``/``send`` message dicts and their
checks, the proxy-headers middleware and the dispatcher (the client's forwarded address is worked
out only when the audit trail asks for it), and a second coroutine around the app.

On the wire it answers as uvicorn's cycle (``http_protocol.Cycle``) does: uvicorn's default headers
(``date``) first, no header line broken by a CR or LF (see ``_head``), ``connection: close`` when
the connection will close, a whole answer with ``content-length`` in one write, a
streamed one chunked with its head held until its first piece. It honours ``Expect:
100-continue`` (the interim answer goes out when the body is first read), write flow control (a
send waits while the client's socket is full), keep-alive, pipelining (through the protocol's own
queue) and graceful shutdown (its task is one of the server's, waited for before exit).

The protocol reads and sets the attributes uvicorn's code expects of a cycle
(``response_complete``, ``disconnected``, ``keep_alive``) and feeds the body through ``feed`` and
``complete``; see ``Protocol`` for the hooks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from orgwarden.gateway.exchange import BodyTooLarge, ClientGone, Headers

if TYPE_CHECKING:
    from orgwarden.api.http_protocol import Protocol
    from orgwarden.gateway.pipeline import Gateway

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class DirectExchange:
    __slots__ = (
        "_gateway",
        "_held",
        "_protocol",
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
        "response_complete",
        "size",
    )

    def __init__(
        self,
        protocol: Protocol,
        gateway: Gateway,
        method: str,
        path: str,
        query: bytes,
        headers: Headers,
        *,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self._protocol = protocol
        self._gateway = gateway
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunks: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.disconnected = False
        self.response_complete = False
        self._held: bytes | None = None  # a streamed answer's head, until its first piece
        self._waiter: asyncio.Future[None] | None = None

    async def run(self) -> None:
        try:
            await self._gateway.serve(self)
        finally:
            if not self.response_complete:  # cancelled mid-answer (shutdown): the client must not wait
                self.response_complete = True
                self._protocol.transport.close()

    # -- fed by the protocol ---------------------------------------------------------------------

    def feed(self, body: bytes) -> None:
        if not self.response_complete:
            self.chunks.append(body)
            self.size += len(body)
            self._wake()

    def complete(self) -> None:
        if not self.response_complete:
            self.more_body = False
            self._wake()

    def lost(self) -> None:
        if not self.response_complete:
            self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- Exchange --------------------------------------------------------------------------------

    def client_host(self) -> str | None:
        protocol = self._protocol
        host = protocol.client[0] if protocol.client else None
        trusted = protocol.trusted_proxies
        if trusted is not None and host in trusted:
            forwarded = [value for name, value in self.headers if name == b"x-forwarded-for"]
            if forwarded:
                address, _ = trusted.get_trusted_client_address(b", ".join(forwarded).decode("latin-1"))
                if address:
                    return address
        return host

    async def read_body(self, limit: int) -> bytes:
        if self.more_body and self.expect_continue and not self._protocol.transport.is_closing():
            self._protocol.transport.write(_CONTINUE)
        self.expect_continue = False
        while True:
            if self.size > limit:
                raise BodyTooLarge
            if not self.more_body:
                chunks = self.chunks
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
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

    async def wait_disconnect(self) -> None:
        while not self.disconnected:
            await self._wait()

    # -- writing ---------------------------------------------------------------------------------

    def _head(self, status: int, headers: Headers, framing: bytes, body: bytes = b"") -> bytes:
        """The status line and headers, and ``body`` after them: one piece, joined once. Header
        lines cannot be forged: what the gateway relays was parsed by llhttp, which refuses control
        characters in names and values, and the rest is its own ids, numbers and dates; as a last
        guard the head must hold exactly one CR and one LF per line (a value smuggling a line break
        would add one). uvicorn's per-character checks cost more than the rest of the head together."""
        defaults = _default_lines(self._protocol.server_state.default_headers)
        lines = _lines(headers)
        close = b"" if self.keep_alive else b"connection: close\r\n"
        return b"".join((STATUS_LINE[status], defaults, lines, framing, close, b"\r\n", body))

    async def _write(self, data: bytes) -> None:
        """Write unless the client is gone (as uvicorn's cycle, which drops what it cannot send)."""
        flow = self._protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()
        if not self.disconnected:
            self._protocol.transport.write(data)

    def _complete(self) -> None:
        self.response_complete = True
        protocol = self._protocol
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()


def _lines(headers: Headers) -> bytes:
    """``name: value`` lines, each ended by CRLF; a CR or LF inside a name or value is refused."""
    lines = b"".join([b"%s: %s\r\n" % pair for pair in headers])
    if lines.count(b"\n") != len(headers) or lines.count(b"\r") != len(headers):
        raise RuntimeError("Invalid HTTP header: a line break inside a name or value.")
    return lines


# uvicorn's default headers (``date``, ``server``, any --header) as lines, for the list they were
# made from: the server replaces that list when the date changes, once a second, so they are made
# once a second rather than on every answer (holding the list keeps its identity from being reused).
_defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


def _default_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    global _defaults
    made_from, lines = _defaults
    if made_from is not headers:
        lines = _lines(headers)
        _defaults = (headers, lines)
    return lines
