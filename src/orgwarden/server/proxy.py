"""Whose ``X-Forwarded-For`` is believed: the trusted proxies (``forwarded_allow_ips``).

A comma list of addresses and networks (``10.0.0.0/8``), or ``*`` for any peer. When the peer is
trusted, the client is the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy
(the left-most when every entry is, or when any peer is trusted), as uvicorn's proxy-headers
middleware did. An entry that is not an IP address is never taken: the address ends up in audit
rows, so a proxy passing on garbage leaves the proxy's own address in its place.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    __slots__ = ("_addresses", "_any", "_networks")

    def __init__(self, spec: str) -> None:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self._any = "*" in entries
        self._addresses: set[Address] = set()
        self._networks: list[Network] = []
        for entry in entries:
            if entry == "*":
                continue
            if "/" in entry:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self._addresses.add(ipaddress.ip_address(entry))

    def __contains__(self, host: str | None) -> bool:
        if self._any:
            return True
        address = _address(host) if host else None
        if address is None:
            return False
        return address in self._addresses or any(address in network for network in self._networks)

    def client(self, peer: str | None, forwarded_for: list[bytes]) -> str | None:
        """The client's address: ``peer``, or, when ``peer`` is trusted, the address it forwarded."""
        if not forwarded_for or peer not in self:
            return peer
        hosts = [entry.strip() for entry in b",".join(forwarded_for).decode("latin-1").split(",")]
        # The right-most entry not added by a trusted proxy (the left-most when every proxy is trusted).
        chosen = hosts[0] if self._any else next((host for host in reversed(hosts) if host not in self), hosts[0])
        address = _address(chosen)
        return str(address) if address is not None else peer


@lru_cache(maxsize=1024)
def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host[:64])
    except ValueError:
        return None
