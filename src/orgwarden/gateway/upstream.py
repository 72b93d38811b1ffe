"""The upstream: one pooled HTTP client per worker, or the built-in simulator, behind one seam.

Both are ``httpx2.AsyncClient``s; only the transport differs (a real connection pool, or the simulator
served in process by ``StreamingASGITransport``), so nothing above this module knows which it talks to.
Which one a request uses: the simulator when ``ORGWARDEN_UPSTREAM=simulator``, or when neither the
workspace nor the server has an upstream key; otherwise the real upstream with the workspace's own
key if it has one, else the server's.
"""

from __future__ import annotations

import httpx2

from orgwarden.config import Settings
from orgwarden.domain.catalog import Catalog
from orgwarden.gateway.asgi_transport import StreamingASGITransport
from orgwarden.gateway.simulator import Simulator

SIMULATOR_BASE = "http://simulator.orgwarden.invalid"

# Headers a client sends that are for orgwarden, not for the upstream.
_NOT_FORWARDED = frozenset({"anthropic-workspace-id"})
_FORWARDED_PLAIN = frozenset({b"content-type", b"accept", b"user-agent"})


def forwarded_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers the upstream gets: ``anthropic-*`` (not tenant-restriction or workspace
    selection, which orgwarden consumes), ``x-stainless-*`` SDK telemetry, content type, accept and
    user agent. Credentials are never among them; the caller adds the upstream's."""
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lower = name.lower()
        if lower.startswith(b"anthropic-"):
            text = lower.decode("latin-1")
            if text in _NOT_FORWARDED or text.startswith("anthropic-allowed-org-ids"):
                continue
            kept.append((lower, value))
        elif lower in _FORWARDED_PLAIN or lower.startswith(b"x-stainless-"):
            kept.append((lower, value))
    kept.append((b"accept-encoding", b"identity"))  # bodies are metered as they pass: keep them plain
    return kept


class Upstreams:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        timeout = httpx2.Timeout(
            settings.upstream_timeout_seconds,
            connect=settings.upstream_connect_timeout_seconds,
            pool=settings.upstream_connect_timeout_seconds,
        )
        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
        self.always_simulate = settings.upstream == "simulator"
        self.default_key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        simulator = Simulator(
            catalog,
            latency_ms=settings.simulator_latency_ms,
            tokens_per_second=settings.simulator_tokens_per_second,
        )
        self.simulator = httpx2.AsyncClient(
            base_url=SIMULATOR_BASE, transport=StreamingASGITransport(simulator), timeout=timeout
        )
        self.real = (
            None
            if self.always_simulate
            else httpx2.AsyncClient(base_url=settings.upstream, timeout=timeout, limits=limits, trust_env=False)
        )

    def pick(self, workspace_key: str | None) -> tuple[httpx2.AsyncClient, str | None]:
        """The client and the upstream credential for a request of a workspace."""
        key = workspace_key or self.default_key
        if self.real is None or key is None:
            return self.simulator, None
        return self.real, key

    async def aclose(self) -> None:
        await self.simulator.aclose()
        if self.real is not None:
            await self.real.aclose()
