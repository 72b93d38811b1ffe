"""Trusted proxies: whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the server believes
(``forwarded_allow_ips``, or uvicorn's old ``FORWARDED_ALLOW_IPS``), through a real server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orgwarden.server.proxy import TrustedProxies
from tests.conftest import TLS
from tests.server.helpers import running


def scope(port: int, **headers: str) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}/scope", headers=headers, verify=TLS)
    assert response.status_code == 200
    return dict(response.json())


def test_the_default_trusts_loopback_and_takes_the_forwarded_address_and_scheme() -> None:
    with running("tests.server.app:app", "--no-lifespan") as (port, _):
        seen = scope(port, **{"x-forwarded-for": "198.51.100.7, 127.0.0.1", "x-forwarded-proto": "https"})
        assert seen["client"] == "198.51.100.7"
        assert seen["scheme"] == "https"
        garbage = scope(port, **{"x-forwarded-for": "x" * 100})  # not an address: never taken
        assert garbage["client"] == "127.0.0.1"


def test_the_old_forwarded_allow_ips_variable_is_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.9.9.9")
    with running("tests.server.app:app", "--no-lifespan") as (port, _):
        seen = scope(port, **{"x-forwarded-for": "198.51.100.7", "x-forwarded-proto": "https"})
        assert seen["client"] == "127.0.0.1"  # loopback is no longer trusted
        assert seen["scheme"] == "http"
    with running("tests.server.app:app", "--no-lifespan", forwarded_allow_ips="127.0.0.0/8") as (port, _):
        assert scope(port, **{"x-forwarded-for": "198.51.100.7"})["client"] == "198.51.100.7"  # the new one wins


def test_a_bad_entry_stops_start_up_with_a_message_naming_it() -> None:
    from orgwarden.config import load_settings
    from orgwarden.errors import ConfigError

    with pytest.raises(ConfigError, match=r"FORWARDED_ALLOW_IPS.*'10\.0\.0\.300'"):
        load_settings(forwarded_allow_ips="127.0.0.1, 10.0.0.300")


@pytest.mark.parametrize(
    ("spec", "peer", "forwarded", "client"),
    [
        ("127.0.0.1", "127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "192.0.2.1", "203.0.113.9", "192.0.2.1"),  # an untrusted peer's header is ignored
        ("127.0.0.1, 10.0.0.0/8", "127.0.0.1", "203.0.113.9, 10.1.2.3", "203.0.113.9"),  # skip trusted hops
        ("127.0.0.1", "127.0.0.1", "203.0.113.9, 198.51.100.1", "198.51.100.1"),  # the right-most untrusted
        ("*", "192.0.2.1", "203.0.113.9, 198.51.100.1", "203.0.113.9"),  # any peer: the left-most
        ("::1", "::1", "2001:db8::5", "2001:db8::5"),
        ("127.0.0.1", "127.0.0.1", "not-an-address", "127.0.0.1"),
    ],
)
def test_the_client_address_behind_trusted_proxies(spec: str, peer: str, forwarded: str, client: str) -> None:
    assert TrustedProxies(spec).client(peer, [forwarded.encode()]) == client
