"""Served over TLS (a certificate from a test CA, as tests/e2e makes them), the session cookie is
``Secure``: a browser never sends it over plain http."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from tests.conftest import drop_database, free_port, make_database, stop_server
from tests.e2e.mitm import make_certificates
from tests.identity.conftest import browser, location, oidc_settings, running_idp, serve_on, sign_in


def test_the_session_cookie_is_secure_when_orgwarden_is_served_over_tls() -> None:
    with tempfile.TemporaryDirectory(prefix="orgwarden-signin-tls-") as tmp_name:
        tmp = Path(tmp_name)
        certificates = make_certificates(tmp)
        trust = ssl.create_default_context(cafile=str(certificates.ca))
        port = free_port()
        db = make_database("sqlite", tmp / "db")
        with running_idp([f"https://127.0.0.1:{port}/auth/callback"], tmp) as idp:
            db.env.update(
                {
                    **oidc_settings(idp),
                    "ORGWARDEN_TLS_CERTFILE": str(certificates.server_cert),
                    "ORGWARDEN_TLS_KEYFILE": str(certificates.server_key),
                }
            )
            srv = serve_on(db, port, tmp, scheme="https", verify=trust)
            try:
                with browser(verify=trust) as b:
                    callback = sign_in(b, srv.base_url, "root@acme.test", stop_at_callback=True)
                    landed = b.get(location(callback))
                    assert landed.status_code == 303, landed.text
                    cookies = [v for k, v in landed.headers.multi_items() if k == "set-cookie"]
                    session = next(c for c in cookies if c.startswith("ow_session="))
                    assert "Secure" in session
                    assert "HttpOnly" in session
                    me = b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"})
                    assert me.status_code == 200
                    assert me.json()["user"]["email"] == "root@acme.test"
            finally:
                stop_server(srv)
                drop_database(db)
