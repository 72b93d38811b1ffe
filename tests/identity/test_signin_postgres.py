"""The browser flow and the device flow once more on PostgreSQL (row locks on device codes and refresh
tokens, the session look-up), against the real IdP: sign in, confirm a code, get, refresh and revoke
tokens, sign out."""

from __future__ import annotations

import time

import httpx

from tests.conftest import TLS, Server
from tests.identity.conftest import IdP, browser, csrf_of, sign_in
from tests.identity.test_device_flow import confirm, oauth_error, poll, resolve, start


def test_sign_in_device_flow_refresh_and_sign_out_on_postgres(pg_world: tuple[IdP, Server]) -> None:
    _idp, srv = pg_world
    with browser() as b:
        landed = sign_in(b, srv.base_url, "root@acme.test")
        assert landed.status_code == 200, landed.text
        body = start(srv).json()
        oauth_error(poll(srv, body["device_code"]), 400, "authorization_pending")
        assert confirm(b, srv, body["user_code"]).status_code == 200
        time.sleep(1.1)
        tokens = poll(srv, body["device_code"])
        assert tokens.status_code == 200, tokens.text
        issued = tokens.json()
        assert resolve(srv, issued["access_token"]) is not None
        refreshed = httpx.post(
            f"{srv.base_url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], "client_id": "test-cli"},
            verify=TLS,
        )
        assert refreshed.status_code == 200, refreshed.text
        assert (
            httpx.post(
                f"{srv.base_url}/oauth/revoke", data={"token": refreshed.json()["refresh_token"]}, verify=TLS
            ).status_code
            == 200
        )
        assert resolve(srv, refreshed.json()["access_token"]) is None
        out = b.post(f"{srv.base_url}/auth/logout", headers={"x-csrf-token": csrf_of(b, srv.base_url)})
        assert out.status_code == 200
        assert b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"}).status_code == 401
