"""Egress through a corporate proxy: which proxy (if any) an outbound connection goes through, and
the ``CONNECT`` tunnel an HTTPS destination is reached by.

Every outbound connection follows the same rules (the upstream, and the spend-alert webhooks): the
standard environment variables, ``https_proxy`` / ``HTTPS_PROXY`` for an https destination,
``http_proxy`` / ``HTTP_PROXY`` for a plain one, ``all_proxy`` / ``ALL_PROXY`` as a fallback (lower
case first, as curl reads them), minus the hosts ``no_proxy`` / ``NO_PROXY`` lists; TLS trusts the
system's CAs plus ``ORGWARDEN_UPSTREAM_CA_BUNDLE``. The upstream alone may be given a proxy of its
own, ``ORGWARDEN_UPSTREAM_PROXY`` (a URL, or ``none`` for a direct connection whatever the
environment says). Everything here is decided once, when a pool is built: the request path pays
nothing for it.

Only ``http://`` proxies are supported (the client speaks plain HTTP to the proxy; an https upstream
is then TLS end to end inside a ``CONNECT`` tunnel). Basic credentials in the proxy URL become a
``Proxy-Authorization`` header, which is never logged nor part of any message or ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

_HEAD_LIMIT = 16 * 1024  # the largest CONNECT answer head accepted from a proxy


class ProxyError(ConnectionError):
    """The proxy refused or broke the tunnel (an ``OSError``: the client reports it as a failed connect)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where it listens, and the ``Proxy-Authorization`` value for it, if any."""

    host: str
    port: int
    authorization: bytes | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """``host:port``, for messages (never the credentials)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_proxy_url(url: str, source: str) -> Proxy:
    """A proxy from its URL (``http://[user:password@]host[:port]``; a bare ``host:port`` means http).

    Raises ``ValueError`` naming ``source`` (the setting or variable) and the problem, never the
    URL itself, which may hold a password."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{source} is not a valid proxy URL (expected http://host:port)") from None
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"{source}: {parts.scheme}:// proxies are not supported; give the proxy as http://host:port"
            " (an https upstream is still TLS end to end, through a CONNECT tunnel)"
        )
    if not parts.hostname:
        raise ValueError(f"{source} names no proxy host (expected http://host:port)")
    authorization = None
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = b"Basic " + base64.b64encode(credentials.encode())
    return Proxy(parts.hostname, port or 80, authorization)


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (the ``NO_PROXY`` syntax) exempts ``host:port`` from the proxy.

    Entries are comma separated: ``*`` (everything), a host name (matches itself and its
    subdomains; a leading ``.`` or ``*.`` is the same), an IP address, a CIDR block, each optionally
    with ``:port`` (IPv6 with a port as ``[::1]:8080``). Case and a trailing dot are ignored."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        try:
            entry_address = ipaddress.ip_address(entry)
        except ValueError:
            entry_address = None
        if entry_address is not None:  # an address matches only itself, never as a name suffix
            if entry_address == address:
                return True
            continue
        name = entry.removeprefix("*").removeprefix(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return inside, int(port) if port.isdigit() else None
    if entry.count(":") == 1:  # name:port or v4:port (a bare v6 address has several)
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


def proxy_for(
    url: str,
    setting: str | None,
    environ: Mapping[str, str],
    *,
    setting_name: str | None = "ORGWARDEN_UPSTREAM_PROXY",
) -> Proxy | None:
    """The proxy ``url`` (a base URL) is reached through, or ``None`` for a direct connection.

    ``setting`` (the upstream's ``ORGWARDEN_UPSTREAM_PROXY``) wins over the environment,
    ``no_proxy`` included: an operator who names a proxy gets it. ``setting_name`` is that
    setting's name for messages; ``None`` for a destination only the environment governs (the
    webhooks). ``ValueError`` names a malformed setting or variable."""
    if setting is not None and setting.strip():
        if setting.strip().lower() == "none":
            return None
        return parse_proxy_url(setting, setting_name or "the proxy setting")
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    names = ("https_proxy", "HTTPS_PROXY") if secure else ("http_proxy", "HTTP_PROXY")
    chosen = next((name for name in (*names, "all_proxy", "ALL_PROXY") if environ.get(name, "").strip()), None)
    if chosen is None:
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    if bypassed(parts.hostname or "", parts.port or (443 if secure else 80), no_proxy):
        return None
    try:
        return parse_proxy_url(environ[chosen], chosen)
    except ValueError as exc:
        if setting_name is None:
            raise
        raise ValueError(f"{exc} ({setting_name}, a URL or none, overrides it)") from None


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Outbound TLS verification: the system's trusted CAs, plus those in ``ca_bundle`` (a
    TLS-inspecting proxy's CA is *added*: destinations reached directly verify as before)."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``: its head, nothing after it (TLS starts with us)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.answered.done():
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 != len(self.buffer):
                self.answered.set_exception(ProxyError("the proxy sent data before the tunnel was used"))
            else:
                self.answered.set_result(bytes(self.buffer[:end]))
        elif len(self.buffer) > _HEAD_LIMIT:
            self.answered.set_exception(ProxyError("the proxy's answer to CONNECT has an oversized head"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(ProxyError("the proxy closed the connection instead of answering CONNECT"))


async def tunnel(proxy: Proxy, host: str, port: int) -> asyncio.Transport:
    """A connection through ``proxy`` to ``host:port`` (``CONNECT``), ready for TLS to the upstream.

    ``OSError`` when the proxy cannot be reached; ``ProxyError`` (an ``OSError`` too) when it
    answers anything but 2xx (407: credentials missing or wrong; 502/503: it could not reach the
    upstream), naming the proxy and its status line."""
    loop = asyncio.get_running_loop()
    try:
        transport, handshake = await loop.create_connection(_Handshake, proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyError(f"could not connect to the proxy {proxy.where}: {exc}") from None
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    head = "\r\n".join(lines).encode()
    if proxy.authorization is not None:
        head += b"\r\nproxy-authorization: " + proxy.authorization
    transport.write(head + b"\r\n\r\n")
    try:
        answer = await handshake.answered
    except BaseException:
        transport.close()
        raise
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit() or not code.startswith("2"):
        transport.close()
        shown = status_line[:200] if version.startswith("HTTP/") else "a malformed answer"
        raise ProxyError(f"the proxy {proxy.where} refused the tunnel to {authority}: {shown}")
    return transport
