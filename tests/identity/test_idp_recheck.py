"""Deactivating a person at the identity provider alone (no SCIM) ends their device sign-in at the
next refresh: orgwarden keeps the IdP's refresh token from the browser sign-in the device was approved
from (sealed), and refreshes it at the IdP before it refreshes its own tokens.

A real ``orgwarden serve`` (SQLite) and the real test IdP (npm ``oidc-provider``), which issues
rotating refresh tokens, can deactivate an account (its refresh grants then get ``invalid_grant``)
and can make its token endpoint drop connections or answer 503. The age limit of a sign-in is tested
by moving the sign-in's start back in the database (no test waits 30 days). A second server has the
re-check turned off (``ORGWARDEN_OIDC_RECHECK_ON_REFRESH=false``): there the IdP is not asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgwarden import ids
from orgwarden.crypto import SecretBox
from orgwarden.domain.clock import utcnow
from orgwarden.identity.recheck import unseal
from orgwarden.storage.tables import UserToken, UserTokenFamily
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import TLS, Server, query_db, unique
from tests.identity.conftest import IdP, browser, sign_in, signin_world
from tests.identity.test_browser_signin import add_user, last_refusal
from tests.identity.test_device_flow import _HIDDEN, DEVICE_GRANT, oauth_error


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[IdP, Server]]:
    with signin_world("sqlite", "orgwarden-recheck-") as pair:
        yield pair


def device_sign_in(idp: IdP, srv: Server) -> tuple[str, dict[str, Any]]:
    """A developer at the IdP and in orgwarden, signed in by the device flow; (email, token response)."""
    email = f"{unique('dev')}@acme.test"
    idp.account(email, email=email)
    add_user(srv, email)
    with srv.http() as http:  # workspace_user in a workspace of their own: the device approval needs one
        users = http.get("/v1/organizations/users", params={"email": email}).json()["data"]
        workspace = http.post("/v1/organizations/workspaces", json={"name": unique("recheck")}).json()
        member = http.post(
            f"/v1/organizations/workspaces/{workspace['id']}/members",
            json={"user_id": users[0]["id"], "workspace_role": "workspace_user"},
        )
        assert member.status_code == 200, member.text
    started = httpx.post(f"{srv.base_url}/oauth/device_authorization", data={"client_id": "test-cli"}, verify=TLS)
    assert started.status_code == 200, started.text
    body = started.json()
    with browser() as b:
        page = sign_in(b, srv.base_url, email, next_path=f"/device?user_code={body['user_code']}")
        assert page.status_code == 200, page.text
        fields = dict(_HIDDEN.findall(page.text))
        assert b.post(f"{srv.base_url}/device", data={**fields, "action": "approve"}).status_code == 200
    tokens = httpx.post(
        f"{srv.base_url}/oauth/token",
        data={"grant_type": DEVICE_GRANT, "device_code": body["device_code"], "client_id": "test-cli"},
        verify=TLS,
    )
    assert tokens.status_code == 200, tokens.text
    return email, tokens.json()


def refresh(srv: Server, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{srv.base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        timeout=30,
        verify=TLS,
    )


def models(srv: Server, access_token: str) -> int:
    """The access token on the data plane: ``GET /v1/models`` (200, or 401 once it is dead)."""
    headers = {"authorization": f"Bearer {access_token}", "anthropic-version": "2023-06-01"}
    return httpx.get(f"{srv.base_url}/v1/models", headers=headers, timeout=30, verify=TLS).status_code


def refused_soon(srv: Server, access_token: str) -> int:
    """The status once the revocation reached the data plane's token cache (it polls within a second)."""
    deadline = time.monotonic() + 10
    status = models(srv, access_token)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = models(srv, access_token)
    return status


def family_of(srv: Server, access_token: str) -> UserTokenFamily:
    async def read(uow: UnitOfWork) -> UserTokenFamily:
        found = await uow.user_tokens.with_user_by_hash(ids.hash_secret(access_token))
        assert found is not None
        family = await uow.user_tokens.family(found[0].family_id)
        assert family is not None
        return family

    return query_db(srv.db, read)


def test_deactivated_at_the_idp_only_ends_the_sign_in_at_the_next_refresh(world: tuple[IdP, Server]) -> None:
    idp, srv = world
    email, issued = device_sign_in(idp, srv)
    assert models(srv, issued["access_token"]) == 200
    # the IdP's token is kept, sealed: not in the clear, bound to the family (no other row opens it)
    family = family_of(srv, issued["access_token"])
    assert family.idp_refresh_token is not None
    assert family.idp_refresh_token.startswith("v1:")
    box = SecretBox((Path(srv.db.env["ORGWARDEN_DATA_DIR"]) / "secret.key").read_text().strip())
    kept = unseal(box, family.idp_refresh_token, family.id)
    assert kept is not None
    assert unseal(box, family.idp_refresh_token, "utf_other") is None
    assert kept not in srv.log()

    # twice: the IdP rotates its refresh token on every use, so the second works only if the new one was kept
    first = refresh(srv, issued["refresh_token"])
    assert first.status_code == 200, first.text
    second = refresh(srv, first.json()["refresh_token"])
    assert second.status_code == 200, second.text
    assert family_of(srv, issued["access_token"]).idp_refresh_token != family.idp_refresh_token
    live = second.json()
    assert models(srv, live["access_token"]) == 200

    idp.deactivate(email)
    refused = refresh(srv, live["refresh_token"])
    oauth_error(refused, 400, "invalid_grant", "the identity provider no longer accepts")
    assert email in refused.json()["error_description"]
    event = last_refusal(srv, "user_token.refresh")
    assert event["reason"] == "idp_refused", event
    assert "invalid_grant" in event["idp_said"], event
    assert len(event["revoked"]) >= 2, event  # the live access token and refresh token
    # the whole family is dead: its access token at once (not at its expiry), its refresh token too
    assert refused_soon(srv, live["access_token"]) == 401
    oauth_error(refresh(srv, live["refresh_token"]), 400, "invalid_grant", "revoked")
    assert family_of(srv, live["access_token"]).idp_refresh_token is None  # nothing of the IdP's is kept


def test_an_unreachable_idp_answers_503_and_spends_nothing(world: tuple[IdP, Server]) -> None:
    idp, srv = world
    _email, issued = device_sign_in(idp, srv)
    try:
        for mode in ("down", "error"):  # the connection dropped; a 503 from the IdP
            idp.outage(mode)
            answer = refresh(srv, issued["refresh_token"])
            oauth_error(answer, 503, "temporarily_unavailable", "try again")
            assert answer.headers["retry-after"] == "30"
            event = last_refusal(srv, "user_token.refresh")
            assert event["reason"] == "idp_unavailable", event
            assert event["revoked"] == [], event
            assert models(srv, issued["access_token"]) == 200  # nothing was revoked
    finally:
        idp.outage(None)
    # the IdP is back: the same refresh token works (it was not spent)
    again = refresh(srv, issued["refresh_token"])
    assert again.status_code == 200, again.text
    assert models(srv, again.json()["access_token"]) == 200


def test_a_sign_in_ends_at_its_age_limit_and_no_token_outlives_it(world: tuple[IdP, Server]) -> None:
    idp, srv = world
    _email, issued = device_sign_in(idp, srv)
    family = family_of(srv, issued["access_token"])
    family_id, user_id = family.id, family.user_id
    max_age = timedelta(days=30)  # ORGWARDEN_SIGNIN_MAX_AGE_SECONDS, by default

    def began(ago: timedelta) -> None:
        async def write(uow: UnitOfWork) -> None:
            family = await uow.user_tokens.family(family_id)
            assert family is not None
            family.created_at = utcnow() - ago
            await uow.commit()

        query_db(srv.db, write)

    # 100 s before its end: the new tokens expire with the sign-in, not an hour later
    began(max_age - timedelta(seconds=100))
    near = refresh(srv, issued["refresh_token"])
    assert near.status_code == 200, near.text
    assert near.json()["expires_in"] <= 100, near.json()

    async def expiries(uow: UnitOfWork) -> list[UserToken]:
        return await uow.user_tokens.for_user(user_id)

    ends = utcnow() + timedelta(seconds=101)
    first = {ids.hash_secret(issued["access_token"]), ids.hash_secret(issued["refresh_token"])}
    new = [t for t in query_db(srv.db, expiries) if t.family_id == family_id and t.secret_hash not in first]
    assert {t.kind for t in new} == {"access", "refresh"}, new
    assert all(t.expires_at <= ends for t in new), new  # both: the refresh token too

    began(max_age + timedelta(seconds=1))
    over = refresh(srv, near.json()["refresh_token"])
    oauth_error(over, 400, "invalid_grant", "ORGWARDEN_SIGNIN_MAX_AGE_SECONDS")
    assert last_refusal(srv, "user_token.refresh")["reason"] == "max_age"
    assert refused_soon(srv, near.json()["access_token"]) == 401


def test_with_the_recheck_off_the_idp_is_not_asked() -> None:
    with signin_world("sqlite", "orgwarden-recheck-off-", ORGWARDEN_OIDC_RECHECK_ON_REFRESH="false") as (idp, srv):
        email, issued = device_sign_in(idp, srv)
        assert family_of(srv, issued["access_token"]).idp_refresh_token is None  # none asked for, none kept
        idp.deactivate(email)
        refreshed = refresh(srv, issued["refresh_token"])  # the gap the setting leaves: SCIM or the age limit
        assert refreshed.status_code == 200, refreshed.text
        assert models(srv, refreshed.json()["access_token"]) == 200
