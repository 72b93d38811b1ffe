"""uvicorn's httptools protocol, with a cheaper way of writing each response.

Writing responses is the largest single cost uvicorn adds to a proxied request
(bench/RESULTS.md): for every header of every response it runs two regular-expression searches,
it formats an access-log line's arguments even when the access log is off, and it writes the
response head and the body in two ``write`` calls, which on a kept-alive connection are two
system calls here and two reads for the client. ``Cycle.send`` does what uvicorn's does, byte for
byte on the wire, except that:

* header names and values are checked with one search over all names and one over all values
  (the same characters are refused: a character is in a concatenation exactly when it is in one
  of its parts);
* the head is held back until the first body message, and both leave in one write. A response
  whose body has not started yet is not visible to the client yet: for orgwarden's own responses
  the body follows at once (JSON answers are sent whole; a relayed stream's head is sent when the
  upstream's first bytes have arrived, and its first event is with them or just behind).

Everything else (keep-alive, pipelining, ``Expect: 100-continue``, flow control, HEAD, chunked
encoding, disconnects) is uvicorn's own code, unchanged: ``Protocol`` only gives each request's
cycle this class. ``orgwarden serve`` passes ``Protocol`` to uvicorn as its ``http`` implementation;
the pinned uvicorn range in pyproject.toml is the one this was written against, and the tests run
every response through it.

Data-plane requests (``/v1/messages`` and the rest of ``pipeline.is_data_plane``) skip ASGI
altogether: ``Protocol`` hands them to the gateway as ``DirectExchange``s (``direct_exchange.py``).
Every other request (the Admin API, telemetry, a data-plane path with a ``%``-escape or an upgrade
request) goes through uvicorn's ASGI cycle as above.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware, _TrustedHosts
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from orgwarden.api.direct_exchange import DirectExchange
from orgwarden.gateway.pipeline import Gateway, is_data_plane


class Cycle(RequestResponseCycle):
    """One request's response, written as uvicorn writes it with the two changes above."""

    _held: bytes | None = None  # the head, until the first body message

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self.response_started = True
            self.waiting_for_100_continue = False
            status_code = message["status"]
            headers = [*self.default_headers, *message.get("headers", [])]
            if self.access_log and self.access_logger.isEnabledFor(logging.INFO):
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(self.scope),
                    self.scope["method"],
                    get_path_with_query_string(self.scope),
                    self.scope["http_version"],
                    status_code,
                )
            if HEADER_RE.search(b"".join([name for name, _ in headers])):
                raise RuntimeError("Invalid HTTP header name.")
            if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
                raise RuntimeError("Invalid HTTP header value.")
            content = [STATUS_LINE[status_code]]
            has_connection_close = False
            for raw_name, value in headers:
                name = raw_name.lower()
                if name == b"content-length" and self.chunked_encoding is None:
                    self.expected_content_length = int(value.decode())
                    self.chunked_encoding = False
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
                elif name == b"connection":
                    connection = [token.lower().strip() for token in value.split(b",")]
                    if b"close" in connection:
                        self.keep_alive = False
                        has_connection_close = True
                content.extend([name, b": ", value, b"\r\n"])
            if not self.keep_alive and not has_connection_close:
                content.append(b"connection: close\r\n")
            if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
                self.chunked_encoding = True
                content.append(b"transfer-encoding: chunked\r\n")
            content.append(b"\r\n")
            self._held = b"".join(content)
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        out = self._held or b""
        self._held = None
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            if body:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            if not more_body:
                out += b"0\r\n\r\n"
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            out = out + body if out else body
        if out:
            self.transport.write(out)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol: data-plane requests go straight to the gateway
    (``DirectExchange``), every other request is answered through ``Cycle``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.gateway, self.trusted_proxies = _find_gateway(self.app)
        if self.limit_concurrency is not None or self.root_path:
            self.gateway = None  # uvicorn's 503s and path prefixes live in its ASGI path

    def on_message_begin(self) -> None:
        # What uvicorn's does, less the ASGI scope: only requests left to ASGI need one, and they
        # get it in on_headers_complete (``_begin_asgi``), before anything reads it.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _begin_asgi(self) -> None:
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        gateway = self.gateway
        if gateway is not None and not self.parser.should_upgrade():
            url = self.url
            if b"?" in url or not url.startswith(b"/"):
                parsed = httptools.parse_url(url)
                raw_path, query = parsed.path, parsed.query or b""
            else:
                raw_path, query = url, b""
            if b"%" not in raw_path and raw_path.isascii():
                path = raw_path.decode("ascii")
                method = self.parser.get_method()
                if method in (b"GET", b"POST") and is_data_plane(path):
                    self._start_direct(gateway, method.decode("ascii"), path, query)
                    return
        self._begin_asgi()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = Cycle  # before its task first runs: every send goes through Cycle.send

    def _start_direct(self, gateway: Gateway, method: str, path: str, query: bytes) -> None:
        parser = self.parser
        exchange = DirectExchange(
            self,
            gateway,
            method,
            path,
            query,
            self.headers,
            keep_alive=parser.get_http_version() != "1.0" and parser.should_keep_alive(),
            expect_continue=self.expect_100_continue,
        )
        existing = self.cycle
        self.cycle = exchange  # type: ignore[assignment]  # uvicorn's code reads it as a cycle
        if existing is None or existing.response_complete:
            self._start_asgi_task(exchange, None)  # type: ignore[arg-type]
        else:  # pipelined behind a request still being answered: queued, as uvicorn queues its own
            self.flow.pause_reading()
            self.pipeline.appendleft((exchange, None))  # type: ignore[arg-type]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        exchange: object = cycle
        if type(exchange) is not DirectExchange:
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(exchange.run())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)  # uvicorn's shutdown waits for it

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if type(cycle) is DirectExchange:
            cycle.feed(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if type(cycle) is DirectExchange:
            cycle.complete()
        else:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        cycle: object = self.cycle
        if type(cycle) is DirectExchange:
            self.cycle = None  # type: ignore[assignment]  # uvicorn's part below is for its own cycles
            cycle.lost()
        super().connection_lost(exc)


def _find_gateway(app: object) -> tuple[Gateway | None, _TrustedHosts | None]:
    """The gateway behind uvicorn's wrappers of orgwarden's dispatcher, and the proxies whose
    ``X-Forwarded-For`` uvicorn trusts (``FORWARDED_ALLOW_IPS``); no gateway for any other app."""
    from orgwarden.api.app import Dispatcher  # the app module imports the whole Admin API

    trusted: _TrustedHosts | None = None
    while app is not None:
        if isinstance(app, Dispatcher):
            return (app.gateway if isinstance(app.gateway, Gateway) else None), trusted
        if isinstance(app, ProxyHeadersMiddleware):
            trusted = app.trusted_hosts
        app = getattr(app, "app", None)
    return None, None
