"""What every connection of one server process shares, refreshed once a second by ``tick``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from orgwarden.server import wire
from orgwarden.server.options import ServerOptions
from orgwarden.server.proxy import TrustedProxies

if TYPE_CHECKING:
    from orgwarden.gateway.exchange import Exchange
    from orgwarden.server.protocol import HttpProtocol

log = logging.getLogger("orgwarden.server")


class DirectHandler:
    """Who answers some requests straight from the connection, without ASGI: ``serve`` takes an
    ``Exchange`` (the gateway's pipeline), ``wants(method, path)`` picks the requests."""

    def __init__(self, serve: Callable[[Exchange], Any], wants: Callable[[bytes, str], bool]) -> None:
        self.serve = serve
        self.wants = wants


class ServerState:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: ServerOptions,
        app: ASGIApp,
        direct: DirectHandler | None,
        scheme: str,
    ) -> None:
        self.loop = loop
        self.options = options
        self.app = app
        self.direct = direct
        self.scheme = scheme
        self.proxies = TrustedProxies(options.forwarded_allow_ips)
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.lifespan_state: dict[str, Any] = {}
        self.shutting_down = False
        self.date = wire.date_line()  # the ``date`` header, made once a second
        self.access_log = logging.getLogger("orgwarden.access.http")  # requests answered through ASGI

    def tick(self) -> None:
        """Once a second: the ``date`` line, then every connection's deadline (set with the loop's clock)."""
        now = self.loop.time()
        self.date = wire.date_line()
        for connection in list(self.connections):
            if connection.deadline <= now:
                connection.timed_out()
