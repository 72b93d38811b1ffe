"""Sign-in fixtures: a real OpenID Connect provider (npm ``oidc-provider``, see ``tests/idp/``) and
orgwarden servers configured to sign people in with it, plus a small "browser" over httpx.

The provider is installed by the tests themselves: ``npm ci`` from ``tests/idp/package-lock.json``
into ``~/.cache/orgwarden-tests/idp-<hash of the lock file>/`` (once per lock file). If node or npm is
missing or the install fails, the tests are skipped with a loud message; in CI (``CI=true``) or with
``ORGWARDEN_TEST_REQUIRE_IDP=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import (
    ORGWARDEN,
    TLS,
    Database,
    Server,
    cli,
    drop_database,
    free_port,
    make_database,
    stop_server,
    wait_until_healthy,
)
from tests.npm_cache import npm_ci

if TYPE_CHECKING:
    from tests.e2e.mitm import Certificates

IDP_SOURCE = Path(__file__).resolve().parents[1] / "idp"
REQUIRE_IDP = os.environ.get("CI") == "true" or os.environ.get("ORGWARDEN_TEST_REQUIRE_IDP") == "1"
CLIENT_ID = "orgwarden"
CLIENT_SECRET = "orgwarden-test-client-secret-0123456789"


def _unavailable(message: str) -> None:
    if REQUIRE_IDP:
        pytest.fail(f"{message} (CI / ORGWARDEN_TEST_REQUIRE_IDP=1: the test identity provider is required)")
    sys.stderr.write(f"\n\n*** {message}; sign-in tests will be SKIPPED ***\n\n")
    pytest.skip(message)


def idp_install_dir() -> Path:
    """``npm ci`` of tests/idp into a cache keyed by its lock file (once; concurrent runs wait on a lock)."""
    target = npm_ci(IDP_SOURCE, "idp", "the test identity provider (npm oidc-provider)", _unavailable, scripts=False)
    # The script itself is copied each time (it changes without the lock file changing), atomically.
    scratch = target / f".server-{os.getpid()}.mjs"
    shutil.copy(IDP_SOURCE / "server.mjs", scratch)
    os.replace(scratch, target / "server.mjs")
    return target


@dataclass
class IdP:
    issuer: str
    process: subprocess.Popen[str]
    log_path: Path

    def account(self, login: str, *, email: str | None = None, groups: list[str] | None = None, **extra: Any) -> None:
        body = {"login": login, "email": email or login, "groups": groups or [], **extra}
        httpx.post(f"{self.issuer}/__test/accounts", json=body, timeout=5, verify=TLS).raise_for_status()

    def deactivate(self, login: str) -> None:
        """The person is deactivated at the IdP: its refresh tokens get ``invalid_grant`` from now on."""
        httpx.post(
            f"{self.issuer}/__test/accounts", json={"login": login, "disabled": True}, timeout=5, verify=TLS
        ).raise_for_status()

    def outage(self, mode: str | None) -> None:
        """The token endpoint drops connections (``down``), answers 503 (``error``), or works (``None``)."""
        httpx.post(f"{self.issuer}/__test/outage", json={"mode": mode}, timeout=5, verify=TLS).raise_for_status()

    def tamper_next_id_token(self, mode: str) -> None:
        httpx.post(f"{self.issuer}/__test/tamper", json={"mode": mode}, timeout=5, verify=TLS).raise_for_status()


@contextmanager
def running_idp(redirect_uris: list[str], tmp: Path) -> Iterator[IdP]:
    directory = idp_install_dir()
    port = free_port()
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],  # orgwarden re-checks people on refresh
            "response_types": ["code"],
        }
    ]
    log_path = tmp / f"idp-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["node", str(directory / "server.mjs")],
            cwd=directory,
            env={**os.environ, "IDP_PORT": str(port), "IDP_CLIENTS": json.dumps(clients)},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1, verify=TLS).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _unavailable(f"the test identity provider did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    try:
        yield IdP(issuer, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def oidc_settings(idp: IdP, **extra: str) -> dict[str, str]:
    return {
        "ORGWARDEN_OIDC_ISSUER": idp.issuer,
        "ORGWARDEN_OIDC_CLIENT_ID": CLIENT_ID,
        "ORGWARDEN_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "ORGWARDEN_OIDC_SCOPES": "openid email profile groups",
        "ORGWARDEN_DEVICE_POLL_INTERVAL_SECONDS": "1",
        **extra,
    }


def serve_on(
    db: Database, port: int, tmp: Path, *, scheme: str = "http", verify: ssl.SSLContext | bool = TLS
) -> Server:
    """``orgwarden init`` + ``orgwarden serve`` on a port chosen beforehand (the IdP must know the
    redirect URI before orgwarden starts)."""
    init = json.loads(cli(db, "init", "--json", "--org-name", "Acme", "--admin-email", "root@acme.test").stdout)
    log_path = tmp / f"server-{port}.log"
    with log_path.open("w") as handle:
        process = subprocess.Popen(
            [ORGWARDEN, "serve", "--port", str(port)],
            env={**os.environ, **db.env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base_url = f"{scheme}://127.0.0.1:{port}"
    wait_until_healthy(process, base_url, log_path, verify)
    return Server(db, base_url, init["admin_api_key"], init["organization"], init["user"], process, log_path, verify)


@dataclass
class SignInWorld:
    idp: IdP
    server: Server
    jit_server: Server  # just-in-time users on, only @acme.test may sign in


@pytest.fixture(scope="module")
def world() -> Iterator[SignInWorld]:
    """One IdP and two orgwarden servers (SQLite): the default settings, and JIT + allowed domains."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-signin-") as tmp_name:
        tmp = Path(tmp_name)
        ports = [free_port(), free_port()]
        redirects = [f"http://127.0.0.1:{p}/auth/callback" for p in ports]
        with running_idp(redirects, tmp) as idp:
            servers: list[Server] = []
            try:
                for i, (port, extra) in enumerate(
                    zip(
                        ports,
                        [{}, {"ORGWARDEN_OIDC_JIT_USERS": "true", "ORGWARDEN_OIDC_ALLOWED_EMAIL_DOMAINS": "acme.test"}],
                        strict=True,
                    )
                ):
                    db = make_database("sqlite", tmp / f"db{i}")
                    db.env.update(oidc_settings(idp, **extra))
                    servers.append(serve_on(db, port, tmp))
                yield SignInWorld(idp, servers[0], servers[1])
            finally:
                for srv in servers:
                    stop_server(srv)
                    drop_database(srv.db)


@contextmanager
def signin_world(
    backend: str, prefix: str, certificates: Certificates | None = None, **settings: str
) -> Iterator[tuple[IdP, Server]]:
    """A running IdP and an orgwarden server on ``backend`` that signs people in with it; with
    ``certificates``, orgwarden is served over https with their server certificate (the returned
    server's ``verify`` trusts their CA). ``settings``: more ``ORGWARDEN_*`` variables for the server."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        scheme = "https" if certificates else "http"
        verify: ssl.SSLContext | bool = TLS
        db = make_database(backend, tmp / "db")
        try:
            with running_idp([f"{scheme}://127.0.0.1:{port}/auth/callback"], tmp) as idp:
                db.env.update(oidc_settings(idp, **settings))
                if certificates:
                    db.env["ORGWARDEN_TLS_CERTFILE"] = str(certificates.server_cert)
                    db.env["ORGWARDEN_TLS_KEYFILE"] = str(certificates.server_key)
                    verify = ssl.create_default_context(cafile=str(certificates.ca))
                srv = serve_on(db, port, tmp, scheme=scheme, verify=verify)
                try:
                    yield idp, srv
                finally:
                    stop_server(srv)
        finally:
            drop_database(db)


@pytest.fixture(scope="module")
def pg_world() -> Iterator[tuple[IdP, Server]]:
    """One IdP and one orgwarden server on PostgreSQL (the same flows, the other database)."""
    with signin_world("postgres", "orgwarden-signin-pg-") as world:
        yield world


# --- the "browser" -----------------------------------------------------------------------------------

_FORM = re.compile(r"<form[^>]*action=\"([^\"]*)\"[^>]*method=\"post\"", re.IGNORECASE)
_HIDDEN = re.compile(r"<input[^>]*type=\"hidden\"[^>]*name=\"([^\"]+)\"[^>]*value=\"([^\"]*)\"", re.IGNORECASE)


def browser(verify: ssl.SSLContext | bool = TLS) -> httpx.Client:
    """A cookie-keeping client that does not follow redirects by itself (the tests look at each hop)."""
    return httpx.Client(timeout=30, follow_redirects=False, headers={"accept": "text/html"}, verify=verify)


def follow(client: httpx.Client, response: httpx.Response, *, stop_at: str | None = None) -> httpx.Response:
    """Follow redirects by GET; with ``stop_at``, stop *before* requesting a URL whose path starts with it
    (the response whose Location points there is returned)."""
    for _ in range(20):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = urljoin(str(response.request.url), response.headers["location"])
        if stop_at is not None and urlsplit(location).path.startswith(stop_at):
            return response
        response = client.get(location)
    raise AssertionError("too many redirects")


def location(response: httpx.Response) -> str:
    return urljoin(str(response.request.url), response.headers["location"])


def fill_idp_login(client: httpx.Client, page: httpx.Response, login: str) -> httpx.Response:
    """Fill and submit the identity provider's own sign-in form (any password is accepted there)."""
    assert page.status_code == 200, page.text
    match = _FORM.search(page.text)
    assert match, f"no sign-in form on the IdP page:\n{page.text[:2000]}"
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
    fields.update({"login": login, "password": "any-password"})
    action = urljoin(str(page.request.url), html.unescape(match.group(1)))
    return client.post(action, data=fields)


def sign_in(
    client: httpx.Client, base_url: str, login: str, *, next_path: str | None = None, stop_at_callback: bool = False
) -> httpx.Response:
    """The browser flow: orgwarden → the IdP's sign-in form → back to orgwarden's callback → wherever next."""
    start = client.get(f"{base_url}/auth/login", params={"next": next_path} if next_path else None)
    assert start.status_code == 302, start.text
    stop_at = "/auth/callback" if stop_at_callback else None
    page = follow(client, start, stop_at=stop_at)
    if page.status_code == 200 and 'name="login"' in page.text and not str(page.url).startswith(base_url):
        page = follow(client, fill_idp_login(client, page, login), stop_at=stop_at)
    # else: the IdP remembered this browser's sign-in (single sign-on) and came straight back
    return page


def csrf_of(client: httpx.Client, base_url: str) -> str:
    response = client.get(f"{base_url}/auth/session", headers={"accept": "application/json"})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])
