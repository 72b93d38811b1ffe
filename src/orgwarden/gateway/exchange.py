"""One data-plane request and its response, as the pipeline sees them: the seam between the
gateway and whatever HTTP server carries it.

The pipeline needs little of a server: the request line and headers, the whole body (or, for an
upload, its pieces as they come), and three ways
to answer (a whole response, or a head followed by pieces and an end), plus word of the client
leaving. ``Exchange`` is that much. ``orgwarden serve`` implements it straight on its HTTP/1.1
server (``server/direct.py``: no ASGI scope, message dicts or middleware per request, which
cost about a fifth of a proxied request's CPU; bench/RESULTS.md). ``AsgiExchange`` implements it
over ASGI, so the gateway stays a plain ASGI app for any other server and for requests the fast
path leaves to ASGI.

Framing is the exchange's job, not the caller's: ``respond`` writes ``content-length`` itself and
``start`` frames what follows as chunked, so the headers passed in never carry ``content-length``
or ``transfer-encoding`` (the pipeline drops the upstream's: they describe the upstream's hop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol
from urllib.parse import quote

from starlette.types import Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]


class BodyTooLarge(Exception):
    """The request body went past the limit ``read_body`` was given."""


class ClientGone(Exception):
    """The client disconnected before its request body had all arrived."""


class Exchange(Protocol):
    method: str
    path: str  # percent-decoded
    raw_path: bytes  # as received, still percent-encoded: what the upstream's request line is built from
    query: bytes
    headers: Headers  # names in lower case, as received

    def client_host(self) -> str | None:
        """The client's address (a trusted proxy's ``X-Forwarded-For`` applied), for the audit trail."""
        ...

    async def read_body(self, limit: int) -> bytes:
        """The whole request body; ``BodyTooLarge`` past ``limit`` bytes, ``ClientGone`` if it left."""
        ...

    def stream_body(self) -> AsyncIterator[bytes]:
        """The request body piece by piece as it arrives (``ClientGone`` if the client leaves before
        its end), with back-pressure: the client is read from only as fast as pieces are taken. For
        bodies too large to hold (file uploads); use it or ``read_body``, not both."""
        ...

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response, with ``content-length``."""
        ...

    async def start(self, status: int, headers: Headers) -> None:
        """The head of a response whose body follows in pieces (chunked)."""
        ...

    async def send(self, chunk: bytes) -> None:
        """One piece of a started response (an ``OSError`` if the server knows the client is gone)."""
        ...

    async def finish(self, last: bytes = b"") -> None:
        """The end of a started response, after ``last``, its final piece if it has one: when the
        rest of an upstream stream has already arrived, its last piece and the end leave in one
        write, so the client is woken once, not twice."""
        ...

    async def until_disconnect(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` (relaying a stream); if the client leaves first, cancel it and return True.
        Also True when a send raised ``OSError`` (the server knew the client was gone)."""
        ...


class AsgiExchange:
    """``Exchange`` over an ASGI ``scope``, ``receive`` and ``send``."""

    __slots__ = ("_receive", "_send", "headers", "method", "path", "query", "raw_path", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw_path = scope.get("raw_path")
        self.raw_path: bytes = raw_path if raw_path else quote(self.path).encode("ascii")
        self.query: bytes = scope.get("query_string", b"")
        self.headers: Headers = scope["headers"]

    def client_host(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    async def read_body(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def stream_body(self) -> AsyncIterator[bytes]:
        while True:  # the ASGI server reads on only as messages are received: its back-pressure
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def start(self, status: int, headers: Headers) -> None:
        # No content-length: the ASGI server frames the body as chunked.
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def finish(self, last: bytes = b"") -> None:
        await self._send({"type": "http.response.body", "body": last, "more_body": False})

    async def until_disconnect(self, work: Coroutine[Any, Any, None]) -> bool:
        # ASGI says a client left only through ``receive``: a second task waits on it.
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(self._disconnected())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if task.done():
            try:
                task.result()
            except OSError:  # the server refused a send: the client is gone
                return True
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return True

    async def _disconnected(self) -> None:
        while True:
            message: Message = await self._receive()
            if message["type"] == "http.disconnect":
                return
