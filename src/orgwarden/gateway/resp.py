"""A lean, pipelining Redis client for the one job of running the limit scripts.

redis-py's asyncio client spends most of a limited request's CPU on machinery this job does not
need: a pipeline object, a pooled connection checked out and back, per-argument encoding through
its encoder, and its own command parsing per batch (bench/RESULTS.md: about 500 µs of the gateway's
CPU per request). Everything the gateway asks of Redis is a short command whose reply it awaits,
so this client keeps only that:

* **one connection**, on which every command is written as soon as it is made and replies are
  matched to callers in order (RESP answers in the order commands arrive). Commands made in the
  same turn of the event loop leave in one ``write``; Redis executes each on its own, so
  pipelining changes no result, and there is no pool to wait for however many requests are in
  flight;
* replies parsed by ``hiredis`` (the C parser redis-py uses); an error reply is returned as a
  ``ReplyError`` value, not raised, so callers decide (e.g. ``NOSCRIPT``);
* **timeouts without a timer per command**: one timer per connection fails it when Redis owes a
  reply and has sent nothing for ``timeout`` seconds, counted from the later of the last reply and
  the moment the oldest unanswered command was written. That is a read timeout (redis-py's
  ``socket_timeout`` means the same), not a deadline per command: a burst of thousands of
  commands whose replies keep arriving is not cut off because the last of them waits behind the
  others, or behind this process's own busy event loop. When the timer fires, every command on
  the connection fails with ``TimeoutError``: its replies can no longer be matched to their
  commands, and an unanswered command may or may not have run (which is why nothing is retried
  here);
* reconnection on the next command after any failure, with the same handshake: ``AUTH`` and
  ``SELECT`` from the URL, then ``prepare`` (the caller's commands for a fresh connection, e.g.
  ``SCRIPT LOAD``).

URLs are read by redis-py's own ``parse_url`` (``redis://``, ``rediss://`` with TLS, ``unix://``), so
``ORGWARDEN_REDIS_URL`` means what it means to every other Redis client in Python.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url


class RedisUnavailable(Exception):
    """The command could not be run: connection refused or lost, or no answer in time."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``), returned to the caller as a value."""


Arg = bytes | str | int
Replied = Callable[[Any], None]
"""Handed a command's reply (a ``ReplyError`` for an error reply) or the ``RedisUnavailable`` that
kept it from being answered."""


def _resolve(future: asyncio.Future[Any]) -> Replied:
    """A ``Replied`` that hands the reply to ``future``."""

    def resolve(reply: Any) -> None:
        if future.done():
            return
        if isinstance(reply, RedisUnavailable):
            future.set_exception(reply)
            # Marked as seen: a caller awaiting it still gets the error, and one that no longer
            # does (a handshake abandoned at its first failure) leaves no "never retrieved" log.
            future.exception()
        else:
            future.set_result(reply)

    return resolve


def encode(args: Sequence[Arg], length: int | None = None) -> bytes:
    """One command in RESP: an array of bulk strings. With ``length`` (more than ``len(args)``),
    the start of a longer command whose last arguments the caller appends with ``bulk``: callers
    that send the same first arguments again and again encode them once."""
    out = [b"*%d\r\n" % (len(args) if length is None else length)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def bulk(arg: str) -> bytes:
    """One argument as a RESP bulk string."""
    data = arg.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


class _Connection(asyncio.Protocol):
    """One connection: the commands written on it and still waiting for their replies, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.reader = hiredis.Reader(replyError=ReplyError, encoding="utf-8")
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop  # with the transport, in ``connection_made``
        self.waiting: deque[Replied] = deque()
        self.buffer: list[bytes] = []
        # Commands written and not yet answered (the first ``owed`` of ``waiting``), and since when
        # Redis has been silent about them: the later of the last reply and their write.
        self.owed = 0
        self.silent_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.failed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()  # once: each call is a getpid() in Python 3.11

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        answered = 0
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisUnavailable(f"ProtocolError: {exc}"))
                return
            if reply is False:
                break
            if not waiting:  # pragma: no cover - Redis never answers what was not asked
                self.fail(RedisUnavailable("ProtocolError: a reply nobody asked for"))
                return
            answered += 1
            waiting.popleft()(reply)
        if answered:
            self.owed -= answered
            self.silent_since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(RedisUnavailable(f"ConnectionError: {exc or 'Redis closed the connection'}"))

    def send(self, command: bytes, then: Replied, *, at_once: bool = False) -> None:
        """Queue an encoded command for this turn's write (``at_once``: write it, and anything
        queued before it, now); ``then`` gets its reply, straight from ``data_received``."""
        if self.failed or self.transport is None:
            then(RedisUnavailable("ConnectionError: the connection to Redis is closed"))
            return
        self.waiting.append(then)
        if at_once:
            self.buffer.append(command)
            self.flush()
            return
        if not self.buffer:
            self.loop.call_soon(self.flush)
        self.buffer.append(command)

    def flush(self) -> None:
        if not self.buffer or self.transport is None:
            return
        self.transport.write(b"".join(self.buffer))
        if not self.owed:
            self.silent_since = time.monotonic()
        self.owed += len(self.buffer)
        self.buffer.clear()
        if self.timer is None:
            loop = self.loop
            self.timer = loop.call_at(loop.time() + self.client.timeout, self.watch)

    def watch(self) -> None:
        """The one timer: fail the connection when Redis has owed a reply for too long in silence."""
        self.timer = None
        if not self.owed:
            return
        timeout = self.client.timeout
        left = self.silent_since + timeout - time.monotonic()
        if left <= 0:
            self.fail(RedisUnavailable(f"TimeoutError: Redis sent nothing for {timeout} s"))
            return
        loop = self.loop
        self.timer = loop.call_at(loop.time() + left, self.watch)

    def fail(self, error: RedisUnavailable) -> None:
        """Fail every waiting command and close: the next command reconnects."""
        self.failed = True
        self.client.forget(self)
        self.buffer.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiting:
            self.waiting.popleft()(error)
        if self.transport is not None:
            self.transport.abort()


class Client:
    """Commands over one pipelined connection (see the module docstring)."""

    def __init__(
        self, url: str, *, timeout: float, prepare: Sequence[Sequence[Arg]] = (), name: str = "orgwarden"
    ) -> None:
        options = parse_url(url)
        self._host = str(options.get("host", "localhost"))
        self._port = int(options.get("port", 6379))
        self._path: str | None = options.get("path")
        self._ssl: ssl.SSLContext | None = None
        if options.get("connection_class") is not None and "path" not in options:  # rediss://
            self._ssl = ssl.create_default_context()
            if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        handshake: list[Sequence[Arg]] = []
        if options.get("password") is not None:
            user = options.get("username")
            handshake.append(("AUTH", user, options["password"]) if user else ("AUTH", options["password"]))
        if int(options.get("db", 0) or 0):
            handshake.append(("SELECT", int(options["db"])))
        handshake.append(("CLIENT", "SETNAME", name))
        self._handshake = [*handshake, *prepare]
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False

    async def call(self, *args: Arg) -> Any:
        """Run one command; its reply (a ``ReplyError`` for an error reply). Raises
        ``RedisUnavailable`` when Redis cannot be reached or does not answer in time."""
        return await self.call_encoded(encode(args))

    async def call_encoded(self, command: bytes) -> Any:
        """``call`` for a command already in RESP (see ``encode``)."""
        connection = self._connection or await self._connect()
        future: asyncio.Future[Any] = connection.loop.create_future()
        connection.send(command, _resolve(future))
        return await future

    def send_now(self, command: bytes, then: Replied) -> bool:
        """Write an encoded command at once on the live connection, ``then`` to get its reply (or
        its failure) straight from the connection: no future, no task, and no further turn of the
        event loop, either way. ``False`` (and nothing sent) when there is no live connection
        (``call_encoded`` makes one). For a caller that gathers its work into one command."""
        connection = self._connection
        if connection is None or connection.failed:
            return False
        connection.send(command, then, at_once=True)
        return True

    def forget(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None

    async def _connect(self) -> _Connection:
        """The live connection, made once however many callers need it at the same moment."""
        if self._closed:
            raise RedisUnavailable("ConnectionError: the client is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            connection = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        return connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                if self._path is not None:
                    _, connection = await loop.create_unix_connection(lambda: _Connection(self), self._path)
                else:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self),
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl else None,
                    )
        except TimeoutError:
            raise RedisUnavailable(f"TimeoutError: no connection to Redis within {self.timeout} s") from None
        except OSError as exc:
            raise RedisUnavailable(f"ConnectionError: {exc}") from None
        # The handshake is answered before any caller's command goes out on this connection.
        futures = [connection.loop.create_future() for _ in self._handshake]
        for args, future in zip(self._handshake, futures, strict=True):
            connection.send(encode(args), _resolve(future))
        for args, future in zip(self._handshake, futures, strict=True):
            reply = await future
            if isinstance(reply, ReplyError):
                error = RedisUnavailable(f"ResponseError: {args[0]!s}: {reply}")
                connection.fail(error)
                raise error
        if self._closed:
            connection.fail(RedisUnavailable("ConnectionError: the client is closed"))
            raise RedisUnavailable("ConnectionError: the client is closed")
        self._connection = connection
        return connection

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.fail(RedisUnavailable("ConnectionError: the client is closed"))
