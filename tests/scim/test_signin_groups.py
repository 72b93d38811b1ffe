"""The OpenID Connect groups claim at a real sign-in (npm oidc-provider, as the sign-in tests use):
the groups the IdP names give their roles, and a later sign-in without them takes the roles back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BACKENDS, TLS, Server, cli, unique
from tests.identity.conftest import IdP, browser, sign_in, signin_world


@pytest.fixture(scope="module", params=BACKENDS)
def signin_server(request: pytest.FixtureRequest) -> Iterator[tuple[IdP, Server]]:
    with signin_world(request.param, "orgwarden-scim-signin-") as world:
        yield world


def role_after_sign_in(idp: IdP, server: Server, email: str, groups: list[str]) -> str:
    idp.account(email, groups=groups)
    with browser() as b:
        landed = sign_in(b, server.base_url, email)
        assert landed.status_code in (200, 303), landed.text
        me = b.get(f"{server.base_url}/auth/session", headers={"accept": "application/json"})
        assert me.status_code == 200, me.text
        return str(me.json()["user"]["role"])


def test_the_groups_claim_at_sign_in_grants_and_takes_back_roles(signin_server: tuple[IdP, Server]) -> None:
    idp, server = signin_server
    email = f"{unique('dev')}@acme.test"
    with server.http() as http:
        invite = http.post("/v1/organizations/invites", json={"email": email, "role": "user"}).json()
        token = invite["accept_url"].split("#token=")[1]
        assert httpx.post(
            f"{server.base_url}/v1/invites/accept", json={"token": token, "name": "Dev"}, verify=TLS
        ).is_success
    name = unique("engineering")
    group = json.loads(cli(server.db, "groups", "create", name, "--json").stdout)
    cli(server.db, "groups", "set-roles", group["id"], "--org-role", "developer")

    assert role_after_sign_in(idp, server, email, [name, "not-a-group-here"]) == "developer"
    with server.http() as http:
        members = http.get(f"/v1/organizations/rbac_groups/{group['id']}/members").json()["data"]
    assert [m["email"] for m in members] == [email]
    assert role_after_sign_in(idp, server, email, []) == "user"


def test_an_invite_accepted_by_signing_in_adds_its_groups(signin_server: tuple[IdP, Server]) -> None:
    idp, server = signin_server
    email = f"{unique('new')}@acme.test"
    group = json.loads(cli(server.db, "groups", "create", unique("billing-team"), "--json").stdout)
    cli(server.db, "groups", "set-roles", group["id"], "--org-role", "billing")
    with server.http() as http:
        made = http.post(
            "/v1/organizations/invites", json={"email": email, "role": "user", "rbac_group_ids": [group["id"]]}
        )
        assert made.status_code == 200, made.text
    assert role_after_sign_in(idp, server, email, []) == "billing"  # the invite's group, not the claim's
