"""A lean HTTP/1.1 client for the one job of forwarding to the upstream.

General-purpose clients spend most of a proxied request's CPU on machinery this job does not need
(bench/RESULTS.md: cancel scopes, per-request health polls of every pooled connection). This one is
asyncio protocols plus httptools' response parser, the parser orgwarden's server uses for requests:

* a keep-alive pool per upstream, last-used first; a connection goes back only when its response was
  read to the end and both sides allow keep-alive;
* the request is written in one call (head and body); the response arrives as status, raw headers,
  then the body as it arrives (chunked transfer decoded, content left as sent): each step of the
  iteration gives everything received since the previous one, so a burst of small SSE events is
  relayed in one write, and nothing waits for bytes that have not arrived;
* a connect timeout, and a read timeout both for the head and between body chunks;
* a reused connection that the upstream closed while idle (before any byte of an answer) is
  replaced once, transparently: nothing was processed, so retrying is safe.

Errors are ``UpstreamError`` subclasses, which the pipeline maps to 502 / 504.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools


def first_header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header in raw ASGI/HTTP pairs; ``name`` in lower case."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    pass


class ConnectTimedOut(UpstreamError):
    pass


class ReadTimedOut(UpstreamError):
    pass


class Broken(UpstreamError):
    """The connection failed or the response was malformed after the request was sent."""


_PAUSE_AT = 64


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[None] = loop.create_future()
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.chunks: deque[bytes] = deque()
        self.wakeup: asyncio.Future[None] | None = None
        self.complete = False
        self.error: BaseException | None = None
        self.received_any = False
        self.paused = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"malformed response from the upstream: {exc}"))
        if len(self.chunks) >= _PAUSE_AT and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self._fail(Broken(f"the upstream closed the connection{f': {exc}' if exc else ''}"))
        self.transport = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Read here, not later: once the message is complete, llhttp has reset the state this
        # answer depends on and says False for every response (each request then paid a new
        # connection, upstream and here: bench/RESULTS.md).
        self.keep_alive = self.parser.should_keep_alive()
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.head.done():
            self.head.set_result(None)
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        if not self.head.done():
            self.head.set_exception(error)
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def time_out(self, message: str) -> None:
        """The answer (its head, or its next bytes) is overdue: fail it and close the connection."""
        self._fail(ReadTimedOut(message))

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.error is None
            and self.transport is not None
            and not self.transport.is_closing()
            and self.keep_alive
        )


class Response:
    """An upstream response: ``status``, raw ``headers``, then ``async for chunk in response``."""

    def __init__(self, pool: Pool, connection: _Connection) -> None:
        self._pool = pool
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers

    def header(self, name: bytes) -> bytes | None:
        return first_header(self.headers, name)

    def arrived(self) -> bytes | None:
        """The whole body if all of it has arrived (often it comes with the head), else ``None``:
        the caller then iterates. Taking it here costs no asynchronous iteration."""
        connection = self._connection
        if not connection.complete or connection.error is not None:
            return None
        chunks = connection.chunks
        body = b"".join(chunks)
        chunks.clear()
        if connection.paused and connection.transport is not None:  # as iterating would: reusable again
            connection.paused = False
            connection.transport.resume_reading()
        return body

    @property
    def done(self) -> bool:
        """All of the body has arrived and been taken: the iteration ends without waiting."""
        connection = self._connection
        return connection.complete and not connection.chunks and connection.error is None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            chunks = connection.chunks
            if chunks:
                # Everything that has arrived, in one piece: relaying it costs one send and one
                # write instead of one per piece, and waits for nothing that has not arrived.
                if len(chunks) == 1:
                    data = chunks.popleft()
                else:
                    data = b"".join(chunks)
                    chunks.clear()
                if connection.paused and connection.transport is not None:
                    connection.paused = False
                    connection.transport.resume_reading()
                yield data
                continue
            if connection.complete:
                return
            if connection.error is not None:
                raise connection.error
            loop = asyncio.get_running_loop()
            connection.wakeup = loop.create_future()
            timer = loop.call_later(self._pool.read_timeout, connection.time_out, "the upstream stopped sending")
            try:
                await connection.wakeup  # a time-out fails the connection: the loop then raises its error
            finally:
                timer.cancel()

    async def aclose(self) -> None:
        self._pool.release(self._connection)


class Pool:
    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float, max_idle: int = 256) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "localhost"
        self.secure = parts.scheme == "https"
        self.port = parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = (self.secure and self.port == 443) or (not self.secure and self.port == 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode()
        self.ssl = ssl.create_default_context() if self.secure else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                )
        except TimeoutError:
            raise ConnectTimedOut(f"could not connect to {self.host}:{self.port} in time") from None
        except OSError as exc:
            raise ConnectFailed(f"could not connect to {self.host}:{self.port}: {exc}") from None
        return protocol

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                connection.reset()
                return connection, True
        return await self._connect(), False

    def release(self, connection: _Connection) -> None:
        if connection.reusable and len(self._idle) < self.max_idle:
            self._idle.append(connection)
        elif connection.transport is not None:
            connection.transport.close()

    def _payload(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The request as written: head and body in one piece, formatted in one step (``b": ".join``
        mapped over the pairs joins each name and value in C, with no Python-level step per header)."""
        start = f"{method} {self.prefix}{target} HTTP/1.1".encode()
        if not headers:
            return b"%b\r\nhost: %b\r\ncontent-length: %d\r\n\r\n%b" % (start, self.host_header, len(body), body)
        lines = b"\r\n".join(map(b": ".join, headers))
        return b"%b\r\nhost: %b\r\n%b\r\ncontent-length: %d\r\n\r\n%b" % (
            start,
            self.host_header,
            lines,
            len(body),
            body,
        )

    async def request(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        payload = self._payload(method, target, headers, body)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            assert connection.transport is not None
            connection.transport.write(payload)
            # A timer, not asyncio.timeout(): the same deadline for a fraction of the cost per request.
            timer = loop.call_later(self.read_timeout, connection.time_out, "the upstream did not answer in time")
            try:
                await connection.head
            except Broken:
                if reused and not connection.received_any and attempt == 1:
                    continue  # closed while idle: nothing was processed, try a fresh connection
                raise
            except asyncio.CancelledError:  # the client's request was abandoned: so is this connection
                if connection.transport is not None:
                    connection.transport.close()
                raise
            finally:
                timer.cancel()
            return Response(self, connection)
        raise Broken("the upstream closed every connection")  # pragma: no cover - two closed in a row

    async def aclose(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()
