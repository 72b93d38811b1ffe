"""The upstream: a pooled HTTP/1.1 client per worker, or the built-in simulator, behind one seam.

Both answer ``request(method, target, headers, body)`` with a response that has ``status``, raw
``headers`` and body chunks (``http1.Pool`` over the network, ``inprocess.InProcess`` for the
simulator in this process), so nothing above this module knows which it talks to. Which one a
request uses: the simulator when ``ORGWARDEN_UPSTREAM=simulator``, or when neither the workspace nor
the server has an upstream key; otherwise the real upstream with the workspace's own key if it has
one, else the server's. The real upstream is reached directly or through the corporate egress
proxy (``egress``: ``ORGWARDEN_UPSTREAM_PROXY``, else ``HTTPS_PROXY`` / ``NO_PROXY``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Protocol

from orgwarden.config import Settings
from orgwarden.domain.catalog import Catalog
from orgwarden.gateway.egress import proxy_for, tls_context
from orgwarden.gateway.http1 import Pool, StreamedBody
from orgwarden.gateway.inprocess import InProcess
from orgwarden.gateway.simulator import Simulator

# Headers a client sends that are for orgwarden, not for the upstream.
_NOT_FORWARDED = frozenset({"anthropic-workspace-id"})
_FORWARDED_PLAIN = frozenset({b"content-type", b"accept", b"user-agent"})


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...
    def arrived(self) -> bytes | None: ...  # the whole body when all of it is already here, else None
    @property
    def done(self) -> bool: ...  # iterating: the piece just taken was the last, and the end has arrived
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | StreamedBody
    ) -> UpstreamResponse: ...


def forwarded_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers the upstream gets: ``anthropic-*`` (not tenant-restriction or workspace
    selection, which orgwarden consumes), ``x-stainless-*`` SDK telemetry, content type, accept and
    user agent, each under its lower-case name. Credentials are never among them; the caller adds
    the upstream's."""
    names = _forwarded_names
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        forwarded = names.get(name)
        if forwarded is None:
            forwarded = _learn_forwarded_name(name)
        if forwarded:
            kept.append((forwarded, value))
    kept.append((b"accept-encoding", b"identity"))  # bodies are metered as they pass: keep them plain
    return kept


# What ``forwarded_headers`` does with each header name it has seen: the name to forward it under,
# or b"" to leave it out. Clients send the same few names on every request, so each is decided once;
# bounded by clearing, as the names are the client's choice.
_forwarded_names: dict[bytes, bytes] = {}
_FORWARDED_NAMES_SIZE = 1024


def _learn_forwarded_name(name: bytes) -> bytes:
    lower = name.lower()
    forwarded = b""
    if lower.startswith(b"anthropic-"):
        text = lower.decode("latin-1")
        if text not in _NOT_FORWARDED and not text.startswith("anthropic-allowed-org-ids"):
            forwarded = lower
    elif lower in _FORWARDED_PLAIN or lower.startswith(b"x-stainless-"):
        forwarded = lower
    if len(_forwarded_names) >= _FORWARDED_NAMES_SIZE:
        _forwarded_names.clear()
    _forwarded_names[name] = forwarded
    return forwarded


class Upstreams:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.default_key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        simulator = Simulator(
            catalog,
            latency_ms=settings.simulator_latency_ms,
            tokens_per_second=settings.simulator_tokens_per_second,
            batch_seconds=settings.simulator_batch_seconds,
            fault=settings.simulator_fault,
            reply=settings.simulator_reply,
        )
        self.simulator = InProcess(simulator, read_timeout=settings.upstream_timeout_seconds)
        self.real: Pool | None = None
        if settings.upstream != "simulator":
            proxy_setting = settings.upstream_proxy.get_secret_value() if settings.upstream_proxy else None
            self.real = Pool(
                settings.upstream,
                connect_timeout=settings.upstream_connect_timeout_seconds,
                read_timeout=settings.upstream_timeout_seconds,
                proxy=proxy_for(settings.upstream, proxy_setting, os.environ),
                ssl_context=tls_context(settings.upstream_ca_bundle)
                if settings.upstream.startswith("https:")
                else None,
            )

    def pick(self, workspace_key: str | None) -> tuple[Upstream, str | None]:
        """The upstream and the credential for a request of a workspace."""
        key = workspace_key or self.default_key
        if self.real is None or key is None:
            return self.simulator, None
        return self.real, key

    async def aclose(self) -> None:
        if self.real is not None:
            await self.real.aclose()
