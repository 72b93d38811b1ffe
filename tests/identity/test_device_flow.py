"""The device flow end to end: ``orgwarden login`` in a subprocess, the person confirming the code at
``/device`` in a browser signed in at the real IdP, ``orgwarden token`` and ``logout``; and the RFC 8628 /
6749 / 7009 answers of the OAuth endpoints, in their own error format."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from orgwarden.config import load_settings
from orgwarden.domain.clock import utcnow
from orgwarden.services.user_tokens import UserGrant, UserTokenService
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import ORGWARDEN, TLS, Server, query_db, unique
from tests.identity.conftest import SignInWorld, browser, sign_in
from tests.identity.test_browser_signin import add_user, last_refusal

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_HIDDEN = re.compile(r'name="([^"]+)" value="([^"]*)"')


def resolve(server: Server, access_token: str) -> UserGrant | None:
    async def run() -> UserGrant | None:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        try:
            return await UserTokenService(UnitOfWorkFactory(session_factory(engine)), 3600, 86400).resolve(access_token)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def start(server: Server, **form: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/oauth/device_authorization", data={"client_id": "test-cli", **form}, verify=TLS
    )


def poll(server: Server, device_code: str, client_id: str = "test-cli") -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/oauth/token",
        data={"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id},
        verify=TLS,
    )


def confirm(b: httpx.Client, server: Server, user_code: str, action: str = "approve") -> httpx.Response:
    """What the person does at /device: open the page (with its CSRF token) and press a button."""
    page = b.get(f"{server.base_url}/device", params={"user_code": user_code})
    assert page.status_code == 200, page.text
    fields = dict(_HIDDEN.findall(page.text))
    return b.post(f"{server.base_url}/device", data={**fields, "action": action})


def oauth_error(response: httpx.Response, status: int, error: str, says: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert says in body.get("error_description", ""), body
    assert response.headers["cache-control"] == "no-store"


@pytest.fixture
def signed_in_browser(world: SignInWorld) -> Iterator[httpx.Client]:
    with browser() as b:
        sign_in(b, world.server.base_url, "root@acme.test")
        yield b


def test_the_authorization_server_metadata_names_the_endpoints(world: SignInWorld) -> None:
    base = world.server.base_url
    meta = httpx.get(f"{base}/.well-known/oauth-authorization-server", verify=TLS).json()
    assert meta["issuer"] == base
    assert meta["device_authorization_endpoint"] == f"{base}/oauth/device_authorization"
    assert meta["token_endpoint"] == f"{base}/oauth/token"
    assert meta["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert set(meta["grant_types_supported"]) == {DEVICE_GRANT, "refresh_token"}


def test_cli_login_token_and_logout_end_to_end(world: SignInWorld, tmp_path: Path) -> None:
    srv = world.server
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("ORGWARDEN_CONFIG", None)
    login = subprocess.Popen(
        [ORGWARDEN, "login", "--url", srv.base_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert login.stdout is not None
        first = login.stdout.readline()
        match = re.search(r"open (\S+) and enter the code ([A-Z]{4}-[A-Z]{4})", first)
        assert match, first
        assert match.group(1) == f"{srv.base_url}/device"
        with browser() as b:
            sign_in(b, srv.base_url, "root@acme.test")
            done = confirm(b, srv, match.group(2))
            assert done.status_code == 200, done.text
            assert "Device connected" in done.text
        output, errors = login.communicate(timeout=60)
    finally:
        if login.poll() is None:
            login.kill()
    assert login.returncode == 0, errors
    assert "Signed in" in output
    credentials = tmp_path / "config" / "orgwarden" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ORGWARDEN, *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    printed = run("token")
    assert printed.returncode == 0, printed.stderr
    access = printed.stdout.strip()
    assert access.startswith("ow-at01-")
    grant = resolve(srv, access)
    assert grant is not None
    assert grant.user_id == srv.user["id"]
    assert grant.workspace_id is not None  # the admin's default: the default workspace
    assert run("token").stdout.strip() == access  # still valid: no refresh

    saved = json.loads(credentials.read_text())
    saved["expires_at"] = 0  # as if an hour had passed
    credentials.write_text(json.dumps(saved))
    refreshed = run("token")
    assert refreshed.returncode == 0, refreshed.stderr
    assert refreshed.stdout.strip() != access
    assert json.loads(credentials.read_text())["refresh_token"] != saved["refresh_token"]  # rotated
    assert resolve(srv, refreshed.stdout.strip()) is not None

    out = run("logout")
    assert out.returncode == 0, out.stderr
    assert not credentials.exists()
    assert resolve(srv, refreshed.stdout.strip()) is None  # revoked at the server
    gone = run("token")
    assert gone.returncode == 1
    assert "not signed in" in gone.stderr


def test_polling_answers_pending_then_slow_down_then_tokens_once(
    world: SignInWorld, signed_in_browser: httpx.Client
) -> None:
    srv = world.server
    started = start(srv)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["verification_uri_complete"].endswith(body["user_code"])
    assert body["interval"] == 1
    oauth_error(poll(srv, body["device_code"]), 400, "authorization_pending")
    oauth_error(poll(srv, body["device_code"]), 400, "slow_down")
    assert confirm(signed_in_browser, srv, body["user_code"]).status_code == 200
    time.sleep(6.1)  # slow_down added 5 s to the interval
    tokens = poll(srv, body["device_code"])
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    issued = tokens.json()
    assert issued["token_type"] == "Bearer"
    assert issued["expires_in"] == 3600
    oauth_error(poll(srv, body["device_code"]), 400, "invalid_grant", "already exchanged")

    # refresh_token: rotates; the spent one again revokes the family
    refreshed = httpx.post(
        f"{srv.base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], "client_id": "test-cli"},
        verify=TLS,
    )
    assert refreshed.status_code == 200, refreshed.text
    reuse = httpx.post(
        f"{srv.base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], "client_id": "test-cli"},
        verify=TLS,
    )
    oauth_error(reuse, 400, "invalid_grant", "already used")
    assert resolve(srv, refreshed.json()["access_token"]) is None


def test_a_denied_code_answers_access_denied(world: SignInWorld, signed_in_browser: httpx.Client) -> None:
    srv = world.server
    body = start(srv).json()
    page = confirm(signed_in_browser, srv, body["user_code"], action="deny")
    assert "denied" in page.text
    oauth_error(poll(srv, body["device_code"]), 400, "access_denied")


def test_an_expired_code_answers_expired_token(world: SignInWorld) -> None:
    srv = world.server
    body = start(srv).json()

    async def expire(uow: UnitOfWork) -> None:
        row = await uow.device_authorizations.by_user_code(body["user_code"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        await uow.commit()

    query_db(srv.db, expire)
    oauth_error(poll(srv, body["device_code"]), 400, "expired_token")


def test_bad_requests_get_rfc_errors_never_a_500(world: SignInWorld) -> None:
    srv = world.server
    base = srv.base_url
    oauth_error(poll(srv, "no-such-code"), 400, "invalid_grant", "not recognised")
    body = start(srv).json()
    oauth_error(poll(srv, body["device_code"], client_id="another"), 400, "invalid_grant", "another client_id")
    oauth_error(start(srv, workspace_id="wrkspc_bad"), 400, "invalid_request", "not a workspace id")
    oauth_error(
        httpx.post(f"{base}/oauth/device_authorization", data={"client_id": "no spaces"}, verify=TLS),
        401,
        "invalid_client",
    )
    oauth_error(
        httpx.post(f"{base}/oauth/token", data={"grant_type": "password", "client_id": "x"}, verify=TLS),
        400,
        "unsupported_grant_type",
    )
    oauth_error(
        httpx.post(f"{base}/oauth/token", json={"grant_type": DEVICE_GRANT}, verify=TLS), 400, "invalid_request"
    )
    oauth_error(
        httpx.post(
            f"{base}/oauth/token",
            content="client_id=a&client_id=b",
            headers={"content-type": "application/x-www-form-urlencoded"},
            verify=TLS,
        ),
        400,
        "invalid_request",
        "more than once",
    )
    oauth_error(
        httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": "c"},
            verify=TLS,
        ),
        400,
        "invalid_grant",
    )
    # RFC 7009: an unknown token is fine; a missing one is not
    assert httpx.post(f"{base}/oauth/revoke", data={"token": "ow-rt01-unknown"}, verify=TLS).status_code == 200
    oauth_error(httpx.post(f"{base}/oauth/revoke", data={}, verify=TLS), 400, "invalid_request")


def test_the_device_page_signs_a_stranger_in_and_comes_back(world: SignInWorld) -> None:
    srv = world.server
    body = start(srv).json()
    with browser() as b:
        first = b.get(body["verification_uri_complete"])
        assert first.status_code == 303
        assert first.headers["location"].startswith("/auth/login?next=")
        landed = sign_in(b, srv.base_url, "root@acme.test", next_path=f"/device?user_code={body['user_code']}")
        assert landed.status_code == 200, landed.text
        assert body["user_code"] in landed.text
        assert "Approve" in landed.text
        # CSRF: a post without the page's token is refused and audited
        forged = b.post(f"{srv.base_url}/device", data={"user_code": body["user_code"], "action": "approve"})
        assert forged.status_code == 403
        assert last_refusal(srv, "auth.device")["reason"] == "csrf"
        unknown = b.get(f"{srv.base_url}/device", params={"user_code": "BBBB-CCCC"})
        assert unknown.status_code == 404
    oauth_error(poll(srv, body["device_code"]), 400, "authorization_pending")


def test_the_workspace_must_be_one_the_user_may_call_the_api_in(world: SignInWorld) -> None:
    srv = world.server
    email = f"{unique('dev')}@acme.test"
    add_user(srv, email, role="developer")
    with srv.http() as admin:
        workspace = admin.post("/v1/organizations/workspaces", json={"name": unique("ws")}).json()

    def user_id() -> str:
        async def read(uow: UnitOfWork) -> str:
            user = await uow.users.by_email(srv.organization["id"], email)
            assert user is not None
            return user.id

        return query_db(srv.db, read)

    with browser() as b:
        sign_in(b, srv.base_url, email)
        body = start(srv, workspace_id=workspace["id"]).json()
        refused = confirm(b, srv, body["user_code"])
        assert refused.status_code == 403
        assert f"may not call the API in workspace {workspace['id']}" in refused.text
        assert "not a member" in refused.text
        oauth_error(poll(srv, body["device_code"]), 400, "access_denied")

        with srv.http() as admin:
            added = admin.post(
                f"/v1/organizations/workspaces/{workspace['id']}/members",
                json={"user_id": user_id(), "workspace_role": "workspace_user"},
            )
            assert added.status_code == 200, added.text
        body = start(srv, workspace_id=workspace["id"]).json()
        assert confirm(b, srv, body["user_code"]).status_code == 200
        time.sleep(1.1)
        tokens = poll(srv, body["device_code"])
        assert tokens.status_code == 200, tokens.text
        grant = resolve(srv, tokens.json()["access_token"])
        assert grant is not None
        assert grant.workspace_id == workspace["id"]

        # no workspace asked for: the first one the user may call the API in
        body = start(srv).json()
        assert confirm(b, srv, body["user_code"]).status_code == 200
        time.sleep(1.1)
        grant = resolve(srv, poll(srv, body["device_code"]).json()["access_token"])
        assert grant is not None
        assert grant.workspace_id == workspace["id"]


def test_a_user_without_any_workspace_is_refused_clearly(world: SignInWorld) -> None:
    srv = world.server
    email = f"{unique('plain')}@acme.test"
    add_user(srv, email, role="user")
    with browser() as b:
        sign_in(b, srv.base_url, email)
        body = start(srv).json()
        refused = confirm(b, srv, body["user_code"])
    assert refused.status_code == 403
    assert "belong to no workspace where you may call the API" in refused.text
