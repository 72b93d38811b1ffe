"""One request answered through an ASGI 3 app (the Admin API, telemetry, anything not direct).

The scope carries what the ASGI spec asks for (``path`` percent-decoded, ``raw_path`` as
received, header names in lower case, ``client`` after the trusted proxies' ``X-Forwarded-For``,
``scheme`` after their ``X-Forwarded-Proto``, a copy of the lifespan ``state``). ``send`` frames
the body with the app's ``content-length``, or chunked without one, writes nothing after the head
of a HEAD, 204 or 304 answer, and holds the head back until the first body message so that both
leave in one write. An app that fails before answering gets the client a 500 error envelope; one
that fails half-way gets the connection closed; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from starlette.types import Message

from orgwarden.gateway.exchange import Headers
from orgwarden.server import wire
from orgwarden.server.options import BODY_BUFFER_BYTES

if TYPE_CHECKING:
    from orgwarden.server.protocol import HttpProtocol

log = logging.getLogger("orgwarden.server")

# What may not appear in a header name (anything but a token character) or value (controls but tab).
_BAD_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\[\]={}\\"/?]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class AsgiCycle:
    def __init__(
        self,
        protocol: HttpProtocol,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: Headers,
        http_version: str,
        *,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self.protocol = protocol
        state = protocol.state
        client = protocol.peer
        scheme = state.scheme
        if client is not None and client[0] in state.proxies:
            forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
            if forwarded:
                host = state.proxies.client(client[0], forwarded)
                client = (host, 0) if host is not None and host != client[0] else client
            proto = next((value for name, value in headers if name == b"x-forwarded-proto"), None)
            if proto is not None and proto.strip().lower() in (b"http", b"https"):
                scheme = proto.strip().lower().decode("ascii")
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": http_version,
            "server": protocol.local,
            "client": client,
            "scheme": scheme,
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "state": state.lifespan_state.copy(),
        }
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.head_only = method == "HEAD"
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.body_read = False  # the end of the body has been handed to the app
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self.chunked = False
        self.expected_length: int | None = None
        self._held: bytes | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the protocol ---------------------------------------------------------------------

    def feed(self, body: bytes) -> None:
        if not self.response_complete:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > BODY_BUFFER_BYTES:
                self.protocol.pause_body()
            self._wake()

    def complete(self) -> None:
        self.more_body = False
        self._wake()

    def lost(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the app ---------------------------------------------------------------------------------

    async def run(self) -> None:
        protocol = self.protocol
        try:
            await protocol.state.app(self.scope, self.receive, self.send)
        except Exception as exc:
            log.error("unhandled error in the application for %s %s", self.scope["method"], self.scope["path"],
                      exc_info=exc)  # fmt: skip
            self._fail()
        else:
            if not self.response_complete:
                log.error("the application returned without a whole answer for %s", self.scope["path"])
                self._fail()
        finally:
            if not self.response_complete and not protocol.transport.is_closing():
                protocol.transport.close()  # cancelled (shutdown): the client must not wait

    def _fail(self) -> None:
        transport = self.protocol.transport
        if not self.response_started and not self.disconnected and not transport.is_closing():
            message = "an internal error occurred; it has been logged"
            self.response_started = self.response_complete = True
            transport.write(wire.error_answer(500, "api_error", message, self.protocol.state.date))
            transport.close()
        elif not transport.is_closing():
            transport.close()

    async def receive(self) -> Message:
        protocol = self.protocol
        if self.expect_continue and self.more_body and not self.disconnected:
            if not protocol.transport.is_closing():
                protocol.transport.write(wire.CONTINUE)
            self.expect_continue = False
        protocol.resume_body()
        while not (self.chunks or self.disconnected or self.response_complete or not self.more_body):
            await self._wait()
        if not self.body_read and not self.disconnected and not self.response_complete:
            chunks, self.chunks, self.buffered = self.chunks, [], 0
            self.body_read = not self.more_body
            return {"type": "http.request", "body": b"".join(chunks), "more_body": self.more_body}
        while not self.disconnected and not self.response_complete:
            await self._wait()  # the body has been read: what is left to hear of is the client leaving
        return {"type": "http.disconnect"}

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def send(self, message: Message) -> None:
        protocol = self.protocol
        if protocol.write_paused and not self.disconnected:
            await protocol.drain()
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self._start(message)
            return
        if self.response_complete:
            raise RuntimeError(f"ASGI message {kind!r} after the response was complete")
        if kind != "http.response.body":
            raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        out = self._held or b""
        self._held = None
        if self.head_only or self.status in (204, 304) or self.status < 200:
            body = b""
        elif self.chunked:
            if body:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                out += wire.LAST_CHUNK
            body = b""
        elif self.expected_length is not None:
            if len(body) > self.expected_length:
                raise RuntimeError("response body longer than its content-length")
            self.expected_length -= len(body)
        if (out or body) and not self.disconnected:
            protocol.transport.write(out + body if out else body)
        if not more:
            if self.expected_length and not self.head_only and self.status not in (204, 304):
                raise RuntimeError("response body shorter than its content-length")
            self.response_complete = True
            self._wake()
            if not self.keep_alive and not protocol.transport.is_closing():
                protocol.transport.close()
            self._log()
            protocol.on_response_complete()

    def _start(self, message: Message) -> None:
        status = int(message["status"])
        headers: list[tuple[bytes, bytes]] = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
        if not 100 <= status < 600:
            raise RuntimeError(f"invalid HTTP status {status}")
        if _BAD_NAME.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("invalid HTTP header name")
        if _BAD_VALUE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("invalid HTTP header value")
        self.response_started = True
        self.status = status
        lines = [wire.STATUS_LINE[status], self.protocol.state.date]
        has_close = False
        for raw_name, value in headers:
            name = raw_name.lower()
            if name == b"content-length" and self.expected_length is None and not self.chunked:
                self.expected_length = int(value)
            elif name == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    continue  # only chunked is framed here
                self.chunked = True
                self.expected_length = None
            elif name == b"connection":
                if b"close" in [token.strip().lower() for token in value.split(b",")]:
                    self.keep_alive = False
                    has_close = True
                else:
                    continue
            lines.append(b"%s: %s\r\n" % (name, value))
        bodiless = self.head_only or status in (204, 304)
        if self.expected_length is None and not self.chunked and not bodiless:
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive and not has_close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self._held = b"".join(lines)

    def _log(self) -> None:
        access = self.protocol.state.access_log
        if access.isEnabledFor(logging.INFO):
            client = self.scope["client"]
            query = self.scope["query_string"]
            target = self.scope["path"] + ("?" + query.decode("latin-1") if query else "")
            access.info('%s - "%s %s HTTP/%s" %d', client[0] if client else "-", self.scope["method"],
                        target[:1000], self.scope["http_version"], self.status)  # fmt: skip
