"""What the server is told at start-up: where to listen, its limits and time-outs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from orgwarden.config import Settings

BODY_BUFFER_BYTES = 65_536
"""Request-body bytes held unread before the connection stops reading (back-pressure)."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_header_bytes: int = 65_536
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    max_connections: int = 4096
    shutdown_timeout: float = 30.0
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "info"
    certfile: str | None = None
    keyfile: str | None = None
    lifespan: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerOptions:
        return cls(
            host=settings.host,
            port=settings.port,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            keepalive_timeout=settings.keepalive_timeout_seconds,
            max_connections=settings.max_connections,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_level=settings.log_level,
            certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
            keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.certfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context
