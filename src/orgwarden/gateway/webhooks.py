"""Outgoing webhooks (spend alerts), signed and delivered in the Standard Webhooks format.

https://www.standardwebhooks.com: a JSON POST with ``webhook-id`` (the message id, the same on every
retry so the receiver can drop duplicates), ``webhook-timestamp`` (Unix seconds of the attempt) and
``webhook-signature`` (``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``, keyed with
the base64-decoded part of the ``whsec_`` secret). Receivers verify with any Standard Webhooks
library; the tests do exactly that, independently of the signing code here.

``send()`` is called from the request path, so it only queues and returns. One background task per
worker delivers, one message at a time, retrying connection errors, timeouts, 429 and 5xx with
exponential backoff and jitter; a 2xx
completes a message and any other answer is a refusal that retrying would not change, so it is
logged and dropped. The queue is bounded: when it is full the oldest message is dropped (logged),
because a receiver that is down for hours must not grow the gateway's memory without limit.

Stopping finishes the attempt under way (never cancelled mid-request), then gives every message
still queued one last attempt within ``drain_seconds``; those not delivered are logged by id, so an
operator can tell the receiver's owner what was missed. The secret is never logged.

HTTP goes through the gateway's own lean client (``gateway.http1``): ``httpx`` is only a test
dependency, and that client already does what is needed here (http and https, connect and read
timeouts, keep-alive, an egress proxy). ``from_settings`` builds the gateway's sender with the
egress rules every outbound connection follows (``gateway.egress``): ``HTTPS_PROXY`` / ``HTTP_PROXY``
/ ``ALL_PROXY`` minus ``NO_PROXY`` from the environment, and ``ORGWARDEN_UPSTREAM_CA_BUNDLE`` for TLS.
``ORGWARDEN_UPSTREAM_PROXY`` is the upstream's own override and does not apply here: it wins over
``NO_PROXY``, so applied here it would force a receiver inside the network through the proxy, and
its ``none`` (an upstream reached directly) would take the webhooks around a proxy the environment
names for everything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import json
import logging
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from orgwarden import __version__, ids
from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.gateway.egress import Proxy, proxy_for, tls_context
from orgwarden.gateway.http1 import Pool, UpstreamError

if TYPE_CHECKING:
    from orgwarden.config import Settings

log = logging.getLogger("orgwarden.gateway")

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MESSAGE_PREFIX = "msg"
QUEUE_SIZE = 10_000
MAX_BACKOFF = 300.0
MAX_RESPONSE_BYTES = 64 * 1024  # read (to keep the connection reusable) but keep only this much
DRAIN_SECONDS = 10.0

Outcome = Literal["delivered", "retry", "refused"]


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` + base64 secret (padding optional, as receivers accept it)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise ValueError("the webhook secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64(HMAC-SHA256(id.timestamp.body))."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(order=True, slots=True)
class _Message:
    due: float  # monotonic time of the next attempt (heap order)
    seq: int  # creation order: ties, and "oldest" when the queue is full
    id: str = field(compare=False)
    event_type: str = field(compare=False)
    body: bytes = field(compare=False)
    attempts: int = field(default=0, compare=False)


class WebhookSender:
    """Delivers events to one URL. ``send()`` from the event loop; ``start()`` / ``stop()`` around use.

    ``proxy`` is the HTTP proxy to go through (``None``: directly) and ``ssl_context`` verifies an
    https receiver (default: the system's CAs); ``from_settings`` picks both by the egress rules."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_seconds: float = 10,
        max_attempts: int = 8,
        first_backoff_seconds: float = 1.0,
        queue_size: int = QUEUE_SIZE,
        drain_seconds: float = DRAIN_SECONDS,
        proxy: Proxy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook URL must be an http:// or https:// URL")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._key = signing_key(secret)
        self._url = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path or '/'}"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        origin = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        self._pool = Pool(
            origin,
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            max_idle=4,
            proxy=proxy,
            ssl_context=ssl_context,
        )
        self._timeout = timeout_seconds
        self._max_attempts = max_attempts
        self._first_backoff = first_backoff_seconds
        self._queue_size = queue_size
        self._drain_seconds = drain_seconds
        self._pending: list[_Message] = []  # a heap by due time
        self._seq = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> WebhookSender | None:
        """The gateway's sender (``None`` without ``webhook_url``), through the proxy ``environ``
        names for its URL, trusting ``upstream_ca_bundle`` as well as the system's CAs.

        Warns (at start-up, in each worker) when ``upstream_proxy`` names a proxy but the webhooks
        go directly: an operator who configured only that setting may expect every outbound
        connection to use it.
        ``ValueError`` names a malformed proxy variable (``Settings`` checks them at start-up)."""
        if settings.webhook_url is None or settings.webhook_secret is None:
            return None
        url = settings.webhook_url
        proxy = proxy_for(url, None, environ, setting_name=None)
        upstream_proxy = settings.upstream_proxy.get_secret_value().strip() if settings.upstream_proxy else ""
        if proxy is None and upstream_proxy and upstream_proxy.lower() != "none":
            parts = urlsplit(url)
            log.warning(
                "webhooks: spend alerts to %s are delivered directly, not through ORGWARDEN_UPSTREAM_PROXY,"
                " which governs the upstream only; set %s (and NO_PROXY) for every outbound connection",
                parts.netloc.rpartition("@")[2],
                "HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY",
            )
        secure = url.startswith("https:")
        return cls(
            url,
            settings.webhook_secret.get_secret_value(),
            proxy=proxy,
            ssl_context=tls_context(settings.upstream_ca_bundle) if secure else None,
        )

    def __repr__(self) -> str:  # never the secret, nor the proxy's credentials
        return f"WebhookSender({self._url!r})"

    @property
    def proxy(self) -> Proxy | None:
        """The proxy deliveries go through (``None``: directly)."""
        return self._pool.proxy

    @property
    def pending(self) -> int:
        """Messages queued or waiting for a retry (not counting one being sent)."""
        return len(self._pending)

    def send(self, event_type: str, data: dict[str, Any]) -> str:
        """Queue an event and return its message id at once (the delivery happens in the background).

        ``data`` must be JSON-serializable: a ``TypeError`` here is the caller's bug, raised now
        rather than lost in the background."""
        body = json.dumps(
            {"type": event_type, "timestamp": rfc3339(utcnow()), "data": data}, separators=(",", ":")
        ).encode()
        self._seq += 1
        message = _Message(time.monotonic(), self._seq, ids.new_id(MESSAGE_PREFIX), event_type, body)
        if len(self._pending) >= self._queue_size:
            oldest = min(self._pending, key=lambda m: m.seq)
            self._pending.remove(oldest)
            heapq.heapify(self._pending)
            log.warning(
                "webhooks: queue full (%d messages); dropped the oldest, %s (%s)",
                self._queue_size,
                oldest.id,
                oldest.event_type,
            )
        heapq.heappush(self._pending, message)
        self._wake.set()
        return message.id

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="orgwarden-webhooks")

    async def stop(self) -> None:
        """Finish the attempt under way, try each queued message once more (within
        ``drain_seconds``), log the ids of those left undelivered, close the connections."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        deadline = time.monotonic() + self._drain_seconds
        left: list[_Message] = []
        for message in sorted(self._pending, key=lambda m: m.seq):
            if time.monotonic() >= deadline:
                left.append(message)
                continue
            try:
                if await self._attempt(message) == "retry":
                    left.append(message)
            except Exception as exc:
                log.error("webhooks: %s could not be sent (%s: %s)", message.id, type(exc).__name__, exc)
                left.append(message)
        self._pending.clear()
        if left:
            log.error(
                "webhooks: stopping with %d undelivered message(s): %s",
                len(left),
                ", ".join(f"{m.id} ({m.event_type})" for m in left),
            )
        await self._pool.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            if not self._pending:
                await self._wake.wait()
                self._wake.clear()
                continue
            wait = self._pending[0].due - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
                continue
            message = heapq.heappop(self._pending)
            try:
                outcome = await self._attempt(message)
            except Exception as exc:  # a bug must not end deliveries for the rest of the process
                log.error("webhooks: %s could not be sent (%s: %s); dropped", message.id, type(exc).__name__, exc)
                continue
            if outcome != "retry":
                continue
            if message.attempts >= self._max_attempts:
                log.error(
                    "webhooks: gave up on %s (%s) after %d attempts", message.id, message.event_type, message.attempts
                )
                continue
            message.due = time.monotonic() + self._backoff(message)
            heapq.heappush(self._pending, message)

    def _backoff(self, message: _Message) -> float:
        """``first_backoff * 2**(n-1)`` after the n-th failure, capped, with +-20 % jitter so that
        the workers of several gateways do not retry against a recovering receiver in lockstep."""
        delay: float = min(self._first_backoff * 2.0 ** (message.attempts - 1), MAX_BACKOFF)
        return delay * random.uniform(0.8, 1.2)

    async def _attempt(self, message: _Message) -> Outcome:
        """One POST. ``retry`` for what may succeed later (network, timeout, 429, 5xx)."""
        message.attempts += 1
        timestamp = int(time.time())
        headers = [
            (b"content-type", b"application/json"),
            (b"user-agent", f"orgwarden/{__version__}".encode()),
            (b"webhook-id", message.id.encode()),
            (b"webhook-timestamp", str(timestamp).encode()),
            (b"webhook-signature", sign(self._key, message.id, timestamp, message.body).encode()),
        ]
        try:
            response = await self._pool.request("POST", self._target, headers, message.body)
            try:
                answer = bytearray()
                async with asyncio.timeout(self._timeout):
                    async for chunk in response:
                        if len(answer) < MAX_RESPONSE_BYTES:
                            answer += chunk[: MAX_RESPONSE_BYTES - len(answer)]
            finally:
                await response.aclose()
        except (UpstreamError, TimeoutError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._note_retry(message, reason)
            return "retry"
        status = response.status
        if 200 <= status < 300:
            if message.attempts > 1:
                log.info("webhooks: delivered %s on attempt %d", message.id, message.attempts)
            return "delivered"
        if status == 429 or status >= 500:
            self._note_retry(message, f"HTTP {status}")
            return "retry"
        shown = bytes(answer[:200]).decode("utf-8", "replace").replace("\n", " ")
        log.error(
            "webhooks: %s refused %s (%s) with HTTP %d, not retrying: %s",
            self._url,
            message.id,
            message.event_type,
            status,
            shown,
        )
        return "refused"

    def _note_retry(self, message: _Message, reason: str) -> None:
        log.warning(
            "webhooks: attempt %d/%d of %s to %s failed (%s)",
            message.attempts,
            self._max_attempts,
            message.id,
            self._url,
            reason,
        )
