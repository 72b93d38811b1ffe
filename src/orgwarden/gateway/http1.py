"""A lean HTTP/1.1 client for the one job of forwarding to the upstream.

General-purpose clients spend most of a proxied request's CPU on machinery this job does not need
(bench/RESULTS.md: cancel scopes, per-request health polls of every pooled connection). This one is
asyncio protocols plus httptools' response parser, the parser orgwarden's server uses for requests:

* a keep-alive pool per upstream, last-used first; a connection goes back only when its response was
  read to the end and both sides allow keep-alive;
* the request is written in one call (head and body), or, for a body that arrives as a stream (a
  file upload: ``StreamedBody``), its head then its pieces as they come (``content-length`` when
  the client declared one, else chunked), each write waiting while the upstream is not reading;
  the response arrives as status, raw headers, then the body as it arrives (chunked transfer
  decoded, content left as sent): each step of the iteration gives everything received since the
  previous one, so a burst of small SSE events is relayed in one write, and nothing waits for bytes
  that have not arrived;
* interim answers (``100 Continue``, ``103 Early Hints``) are skipped: the answer is the final one,
  so nothing of a request's answer is left unread on a pooled connection for the next request;
* a body with neither ``content-length`` nor chunked encoding ends when the upstream closes the
  connection (HTTP/1.0 servers and some proxies answer so); such a connection is never pooled;
* a connect timeout, and a read timeout both for the head and between body chunks;
* a request is sent again (once, on a fresh connection) only when none of it can have been
  processed: the write failed at once, or a reused connection closed unanswered and the method is
  idempotent. A POST that was handed to a connection which then closed without a byte of answer is
  *not* sent again (it may be running upstream, and billed): that is ``Broken``. A streamed body is
  read once: its request is sent again only when writing its head failed at once;
* through an HTTP proxy when one is configured (``egress``): a ``CONNECT`` tunnel with TLS inside
  for an https upstream, absolute-form request targets for a plain one.

Errors are ``UpstreamError`` subclasses, which the pipeline maps to 502 / 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from orgwarden.gateway.egress import Proxy, tunnel


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


@dataclass(slots=True)
class StreamedBody:
    """A request body sent as it arrives: its pieces, and its length when the client declared it."""

    chunks: AsyncIterator[bytes]
    length: int | None = None


_PAUSE_AT = 64
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})  # idempotent (RFC 9110 9.2.2)
_BODILESS = frozenset({204, 304})


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        # Kept: in Python 3.11 every asyncio.get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.chunks: deque[bytes] = deque()
        self.wakeup: asyncio.Future[None] | None = None
        self.complete = False
        self.error: BaseException | None = None
        self.received_any = False
        self.paused = False
        self.keep_alive = False
        self.interim = False
        self.until_eof = False
        self.drained: asyncio.Future[None] | None = None  # while the transport's buffer is full

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the upstream switched protocols (101), which no forwarded request asks for"))
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"malformed response from the upstream: {exc}"))
        if self.chunks:  # one wake-up for every piece of body this read held (a stream's events)
            self._wake()
        if len(self.chunks) >= _PAUSE_AT and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()  # a writer waiting for room learns of the loss by the closed transport
        if not self.complete:
            if self.until_eof and exc is None and self.error is None:
                self.complete = True  # a close-delimited body: the close is its end
                self._wake()
            else:
                when = "mid-answer" if self.head.done() else "before answering"
                self._fail(Broken(f"the upstream closed the connection {when}{f': {exc}' if exc else ''}"))
        self.transport = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            if status == 101:
                self._fail(Broken("the upstream switched protocols (101), which no forwarded request asks for"))
            self.interim = True
            return
        # Read here, not later: once the message is complete, llhttp has reset the state this
        # answer depends on and says False for every response (each request then paid a new
        # connection, upstream and here: bench/RESULTS.md).
        self.keep_alive = keep_alive = self.parser.should_keep_alive()
        if not keep_alive and status not in _BODILESS and not self._framed():
            self.until_eof = True  # only a connection that closes can delimit a body so
        if not self.head.done():
            self.head.set_result(None)

    def _framed(self) -> bool:
        """Whether the answer says where its body ends (``content-length`` or chunked)."""
        for name, _ in self.headers:
            lower = name.lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                return True
        return False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)  # httptools hands over a bytes object of its own

    def on_message_complete(self) -> None:
        if self.interim:  # forget the interim answer; the parser goes on to the final one
            self.interim = False
            self.headers.clear()
            return
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

    def abandon(self) -> None:
        """Never used (its TLS handshake failed): its closing is nobody's error to report."""
        self.complete = True
        if self.head.done() and not self.head.cancelled():
            self.head.exception()  # retrieved: asyncio would log it as never retrieved

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
        loop = connection.loop
        timeout = self._pool.read_timeout
        # One timer for the whole body, not one per piece: it fires at the earliest moment a wait
        # could have lasted ``timeout``, and fails the connection only if one has (a wait begun
        # later gets the timer set again for what is left of it).
        timer: asyncio.TimerHandle | None = None
        waiter: asyncio.Future[None] | None = None
        waiting_since = 0.0

        def check() -> None:
            nonlocal timer
            waiting = waiter is not None and not waiter.done()
            left = waiting_since + timeout - loop.time() if waiting else timeout
            if waiting and left <= 0:
                timer = None
                connection.time_out("the upstream stopped sending")
            else:
                timer = loop.call_later(left, check)

        try:
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
                connection.wakeup = waiter = loop.create_future()
                waiting_since = loop.time()
                if timer is None:
                    timer = loop.call_later(timeout, check)
                await connection.wakeup  # a time-out fails the connection: the loop then raises its error
        finally:
            if timer is not None:
                timer.cancel()

    async def aclose(self) -> None:
        self._pool.release(self._connection)


class Pool:
    """Keep-alive connections to one upstream (scheme, host, port), directly or through one proxy.

    ``ssl_context`` verifies an https upstream (default: the system's CAs); ``proxy`` is the HTTP
    proxy to go through (``egress.proxy_for``), or ``None`` for direct connections."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = 256,
        proxy: Proxy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "localhost"
        self.secure = parts.scheme == "https"
        self.port = parts.port or (443 if self.secure else 80)
        self.proxy = proxy
        default_port = (self.secure and self.port == 443) or (not self.secure and self.port == 80)
        authority = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            authority = f"[{self.host}]" if default_port else f"[{self.host}]:{self.port}"
        # What precedes a request's target, and its host line: both fixed per pool, so a request
        # through a proxy costs no more to format than a direct one.
        self.prefix = parts.path.rstrip("/")
        self.host_line = b"host: " + authority.encode()
        self.plain_proxy = proxy is not None and not self.secure
        if proxy is not None and not self.secure:  # absolute-form targets, credentials on every request
            self.prefix = f"http://{authority}{self.prefix}"
            if proxy.authorization is not None:
                self.host_line += b"\r\nproxy-authorization: " + proxy.authorization
        self.ssl = (ssl_context or ssl.create_default_context()) if self.secure else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []

    @property
    def where(self) -> str:
        """The upstream, and the proxy if there is one, for messages."""
        through = f" through the proxy {self.proxy.where}" if self.proxy is not None else ""
        return f"{self.host}:{self.port}{through}"

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        try:
            async with asyncio.timeout(self.connect_timeout):
                if proxy is None:
                    _, protocol = await loop.create_connection(
                        _Connection, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                    )
                elif self.ssl is None:
                    _, protocol = await loop.create_connection(_Connection, proxy.host, proxy.port)
                else:
                    raw = await tunnel(proxy, self.host, self.port)
                    protocol = _Connection()
                    try:
                        secured = await loop.start_tls(raw, protocol, self.ssl, server_hostname=self.host)
                    except BaseException:
                        raw.close()
                        protocol.abandon()
                        raise
                    if secured is None:  # pragma: no cover - only when the loop is closing
                        raise ConnectionError("the TLS handshake was abandoned")
                    protocol.connection_made(secured)
        except TimeoutError:
            raise ConnectTimedOut(f"could not connect to {self.where} in time") from None
        except OSError as exc:  # refused, TLS verification, or the proxy's refusal (egress.ProxyError)
            raise ConnectFailed(f"could not connect to {self.where}: {exc}") from None
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
            return b"%b\r\n%b\r\ncontent-length: %d\r\n\r\n%b" % (start, self.host_line, len(body), body)
        lines = b"\r\n".join(map(b": ".join, headers))
        return b"%b\r\n%b\r\n%b\r\ncontent-length: %d\r\n\r\n%b" % (
            start,
            self.host_line,
            lines,
            len(body),
            body,
        )

    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | StreamedBody
    ) -> Response:
        if isinstance(body, StreamedBody):
            return await self._request_streamed(method, target, headers, body)
        payload = self._payload(method, target, headers, body)
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            transport = connection.transport
            assert transport is not None
            transport.write(payload)
            if transport.is_closing():  # the write failed at once: none of the request left
                transport.close()
                if attempt == 1:
                    continue
                raise Broken(f"the connection to {self.where} failed before the request was sent")
            # A timer, not asyncio.timeout(): the same deadline for a fraction of the cost per request.
            timer = connection.loop.call_later(
                self.read_timeout, connection.time_out, "the upstream did not answer in time"
            )
            try:
                await connection.head
            except Broken:
                # A reused connection closed unanswered: most likely the upstream closed it while
                # idle and never saw the request, but it may have read it and died. Sending it
                # again is only safe when running it twice does no harm (not a POST: billed twice).
                if reused and not connection.received_any and attempt == 1 and method in _REPLAYABLE:
                    continue
                raise
            except asyncio.CancelledError:  # the client's request was abandoned: so is this connection
                if connection.transport is not None:
                    connection.transport.close()
                raise
            finally:
                timer.cancel()
            if self.plain_proxy and connection.status == 407:  # the proxy's answer, not the upstream's
                self.release(connection)
                raise ConnectFailed(f"could not connect to {self.where}: the proxy requires credentials (407)")
            return Response(self, connection)
        raise Broken("the upstream closed every connection")  # pragma: no cover - two closed in a row

    async def _request_streamed(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: StreamedBody
    ) -> Response:
        """Send the head, then the body's pieces as they come, while watching for the answer: an
        upstream may answer (a refusal) before it has read all of it; the rest is then not sent,
        and the connection not kept. Errors of the body's source (the client's) pass through."""
        framing = b"transfer-encoding: chunked" if body.length is None else b"content-length: %d" % body.length
        start = f"{method} {self.prefix}{target} HTTP/1.1".encode()
        head = b"\r\n".join([start, self.host_line, *map(b": ".join, headers), framing, b"", b""])
        for attempt in (1, 2):
            connection, _ = await self._acquire()
            transport = connection.transport
            assert transport is not None
            transport.write(head)
            if not transport.is_closing():
                break
            transport.close()  # none of it left: nothing of the body was read either
            if attempt == 2:
                raise Broken(f"the connection to {self.where} failed before the request was sent")
        writer = asyncio.ensure_future(self._write_body(connection, body, chunked=body.length is None))
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait({writer, connection.head}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():
                writer.result()  # the source's error, or Broken
                timer = loop.call_later(self.read_timeout, connection.time_out, "the upstream did not answer in time")
                try:
                    await connection.head
                finally:
                    timer.cancel()
            else:  # answered early: what is left of the body is not sent
                connection.keep_alive = False
                await _cancelled(writer)
                connection.head.result()
        except BaseException:
            await _cancelled(writer)
            if connection.transport is not None:
                connection.transport.close()
            raise
        return Response(self, connection)

    async def _write_body(self, connection: _Connection, body: StreamedBody, *, chunked: bool) -> None:
        async for piece in body.chunks:
            transport = connection.transport
            if transport is None or transport.is_closing():
                raise Broken(f"the connection to {self.where} closed while the request body was sent")
            if piece:
                transport.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            drained = connection.drained
            if drained is not None:
                try:
                    async with asyncio.timeout(self.read_timeout):
                        await drained
                except TimeoutError:
                    raise ReadTimedOut("the upstream stopped reading the request body") from None
        if chunked and connection.transport is not None:
            connection.transport.write(b"0\r\n\r\n")

    async def aclose(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()


async def _cancelled(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` and wait for it to end (its own error, if it had one, is dropped)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):  # the caller reports what went wrong
        await task
