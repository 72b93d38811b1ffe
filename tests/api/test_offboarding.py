"""Offboarding: removing or deactivating a user closes every door they had, with one audit event.

A removed (Admin API, CLI) or deactivated (CLI) user loses their admin keys at once, and the data-plane
keys they created stop working too, unless the organization's ``offboarding_key_policy`` is ``keep``.
The setting is read and changed through ``/v1/organizations/me/settings`` (an extension) and
``orgwarden org-settings``. The organization always keeps an enabled admin. Everything is read back
from the real server and its real database, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import anthropic
import httpx
import pytest

from orgwarden import ids
from orgwarden.config import load_settings
from orgwarden.domain.clock import utcnow
from orgwarden.errors import InvalidRequest
from orgwarden.services.user_tokens import UserTokenService
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import UserSession
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.api.test_admin_api_sdk import new_user
from tests.api.test_audit_trail import audit_events, events_of_request
from tests.conftest import TLS, Server, assert_error, cli, query_db, unique

PROBE = "/v1/models/claude-sonnet-4-6"  # a data-plane call that needs only a valid key
T = TypeVar("T")


# --- helpers (the cross-instance test uses them too) --------------------------------------------------


def make_admin(server: Server, user_id: str) -> None:
    """Give a user the admin role. Nothing in the API can (``admin`` is not assignable, as at
    Anthropic), but an organization gets a second admin from SCIM groups or a database operator."""

    async def promote(uow: Any) -> None:
        user = await uow.users.get(server.organization["id"], user_id)
        user.role = "admin"
        await uow.commit()

    query_db(server.db, promote)


def admin_with_keys(server: Server, client: anthropic.Anthropic, n_keys: int = 2) -> dict[str, Any]:
    """A second admin, their admin key (from the CLI), and ``n_keys`` data-plane keys they created
    with it through the Admin API: ``{"user", "admin_key", "admin_key_id", "keys": [{id, key}]}``."""
    user = new_user(server, client, "developer")
    make_admin(server, user.id)
    created = json.loads(cli(server.db, "admin-keys", "create", "--user", user.id, "--json").stdout)
    keys = []
    with server.http(created["key"]) as http:
        for _ in range(n_keys):
            response = http.post("/v1/organizations/api_keys", json={"name": unique("offb")})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["created_by"] == {"id": user.id, "type": "user"}
            keys.append({"id": body["id"], "key": body["key"], "workspace_id": body["scope"]["workspace_id"]})
    return {"user": user, "admin_key": created["key"], "admin_key_id": created["id"], "keys": keys}


def data_plane(server: Server, secret: str) -> httpx.Response:
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    return httpx.get(server.base_url + PROBE, headers=headers, timeout=10, verify=TLS)


def settled(call: Callable[[], httpx.Response], status: int, within: float = 5.0) -> httpx.Response:
    """``call()`` again until it answers ``status`` (caches hear of changes within a second: the
    bound itself is proven by the cross-instance test; here only the outcome matters)."""
    deadline = time.monotonic() + within
    while True:
        response = call()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def refused_on_data_plane(server: Server, secret: str, message: str = "this API key is inactive") -> None:
    assert_error(settled(lambda: data_plane(server, secret), 401), 401, "authentication_error", message)


def admin_api(server: Server, secret: str) -> httpx.Response:
    with server.http(secret) as http:
        return http.get("/v1/organizations/me")


def set_policy(server: Server, policy: str) -> httpx.Response:
    with server.http() as http:
        return http.post("/v1/organizations/me/settings", json={"offboarding_key_policy": policy})


@pytest.fixture
def keep_policy(server: Server) -> Iterator[None]:
    assert set_policy(server, "keep").status_code == 200
    try:
        yield
    finally:
        assert set_policy(server, "deactivate").status_code == 200


def the_event(server: Server, response: httpx.Response) -> dict[str, Any]:
    events = events_of_request(server, response.headers["request-id"])
    assert len(events) == 1, events
    return events[0]


def with_tokens(server: Server, work: Callable[[UserTokenService, UnitOfWorkFactory], Awaitable[T]]) -> T:
    """Run ``work`` with the sign-in token service over the server's real database."""

    async def main() -> T:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        try:
            uow = UnitOfWorkFactory(session_factory(engine))
            return await work(UserTokenService(uow, 3600, 86_400), uow)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def sign_in(server: Server, user_id: str, workspace_id: str | None = None) -> dict[str, Any]:
    """What signing in leaves: a grant of tokens (as the device flow issues them, bound to
    ``workspace_id``) and a browser session (as the OpenID Connect callback makes it).
    ``{"access", "refresh", "token_ids", "session_id", "session_cookie"}``."""

    async def work(tokens: UserTokenService, uow: UnitOfWorkFactory) -> dict[str, Any]:
        issued = await tokens.issue(
            organization_id=server.organization["id"],
            user_id=user_id,
            workspace_id=workspace_id,
            client_id="cli",
            scope="user",
        )
        assert await tokens.resolve(issued.access_token) is not None
        now = utcnow()
        cookie = ids.new_session_secret()
        session = UserSession(
            id=ids.new_id(ids.USER_SESSION),
            organization_id=server.organization["id"],
            user_id=user_id,
            secret_hash=ids.hash_secret(cookie),
            created_at=now,
            expires_at=now + timedelta(hours=8),
            last_seen_at=now,
        )
        async with uow() as u:
            u.user_sessions.add(session)
            await u.commit()
            token_ids = sorted(t.id for t in await u.user_tokens.for_user(user_id))
        return {
            "access": issued.access_token,
            "refresh": issued.refresh_token,
            "token_ids": token_ids,
            "session_id": session.id,
            "session_cookie": cookie,
        }

    return with_tokens(server, work)


def after_offboarding(server: Server, grant: dict[str, Any]) -> None:
    """The grant's access token resolves to nothing, its refresh token is refused, its session revoked."""

    async def work(tokens: UserTokenService, uow: UnitOfWorkFactory) -> None:
        assert await tokens.resolve(grant["access"]) is None
        with pytest.raises(InvalidRequest, match="refresh_token was revoked"):
            await tokens.refresh(grant["refresh"], client_id="cli")
        async with uow() as u:
            session = await u.user_sessions.session.get(UserSession, grant["session_id"])
            assert session is not None
            assert session.revoked_at is not None

    with_tokens(server, work)


def cache_events_about(server: Server, *entity_ids: str) -> set[tuple[str, str]]:
    """The (entity_type, entity_id) cache events written about these entities."""

    async def query(uow: Any) -> set[tuple[str, str]]:
        return {(e.entity_type, e.entity_id) for e in await uow.cache_events.since(0) if e.entity_id in entity_ids}

    result: set[tuple[str, str]] = query_db(server.db, query)
    return result


def user_row(server: Server, user_id: str) -> Any:
    async def query(uow: Any) -> Any:
        from sqlalchemy import select

        from orgwarden.storage.tables import User

        return await uow.users.session.scalar(select(User).where(User.id == user_id))

    return query_db(server.db, query)


# --- the setting ----------------------------------------------------------------------------------------


def test_the_offboarding_key_policy_defaults_to_deactivate_and_can_be_changed(server: Server) -> None:
    with server.http() as http:
        assert http.get("/v1/organizations/me/settings").json() == {
            "type": "organization_settings",
            "offboarding_key_policy": "deactivate",
        }
        changed = http.post("/v1/organizations/me/settings", json={"offboarding_key_policy": "keep"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["offboarding_key_policy"] == "keep"
        event = the_event(server, changed)
        assert (event["action"], event["target_type"], event["target_id"]) == (
            "organization.update", "organization", server.organization["id"],
        )  # fmt: skip
        assert event["details"] == {"offboarding_key_policy": ["deactivate", "keep"]}
        assert http.get("/v1/organizations/me/settings").json()["offboarding_key_policy"] == "keep"
        again = http.post("/v1/organizations/me/settings", json={"offboarding_key_policy": "keep"})
        assert events_of_request(server, again.headers["request-id"]) == []  # no change, no event
        assert http.post("/v1/organizations/me/settings", json={"offboarding_key_policy": "deactivate"}).is_success
        # the spec's organization object stays as it is
        assert set(http.get("/v1/organizations/me").json()) == {"id", "name", "type"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"offboarding_key_policy": "revoke"}, "offboarding_key_policy: 'revoke' is not one of 'deactivate', 'keep'"),
        ({"offboarding_key_policy": 1}, "offboarding_key_policy"),
        ({"offboarding_key_policy": "x" * 100_000}, "is not one of"),
        ({"other": "keep"}, "other"),
    ],
)
def test_a_bad_setting_is_refused_with_a_400_naming_it(server: Server, body: dict[str, Any], message: str) -> None:
    with server.http() as http:
        response = http.post("/v1/organizations/me/settings", json=body)
        assert_error(response, 400, "invalid_request_error", message)
        assert http.get("/v1/organizations/me/settings").json()["offboarding_key_policy"] == "deactivate"


def test_the_settings_route_needs_an_admin_key(server: Server, client: anthropic.Anthropic) -> None:
    key = admin_with_keys(server, client, n_keys=1)["keys"][0]["key"]
    with server.http(key) as http:
        assert_error(http.get("/v1/organizations/me/settings"), 403, "permission_error", "admin")
        response = http.post("/v1/organizations/me/settings", json={"offboarding_key_policy": "keep"})
        assert_error(response, 403, "permission_error", "admin")


def test_the_cli_shows_and_changes_the_setting(server: Server) -> None:
    shown = json.loads(cli(server.db, "org-settings", "--json").stdout)
    assert shown == {"type": "organization_settings", "offboarding_key_policy": "deactivate"}
    changed = json.loads(cli(server.db, "org-settings", "--offboarding-key-policy", "keep", "--json").stdout)
    assert changed["offboarding_key_policy"] == "keep"
    assert audit_events(server)[-1]["actor_type"] == "cli"
    assert audit_events(server)[-1]["details"] == {"offboarding_key_policy": ["deactivate", "keep"]}
    refused = cli(server.db, "org-settings", "--offboarding-key-policy", "nope", check=False)
    assert refused.returncode == 1
    assert "offboarding_key_policy: 'nope' is not one of" in refused.stderr
    cli(server.db, "org-settings", "--offboarding-key-policy", "deactivate")


# --- removal ----------------------------------------------------------------------------------------------


def test_removing_a_user_revokes_their_admin_key_and_deactivates_the_keys_they_created(
    server: Server, client: anthropic.Anthropic
) -> None:
    who = admin_with_keys(server, client)
    grant = sign_in(server, who["user"].id)
    other = client.organization.workspaces.create(name=unique("offb"))
    with server.http() as http:  # a key the root admin created is not the user's
        bystander = http.post("/v1/organizations/api_keys", json={"name": unique("by"), "workspace_id": other.id})
    for key in who["keys"]:
        assert data_plane(server, key["key"]).status_code == 200
    assert admin_api(server, who["admin_key"]).status_code == 200

    raw = client.organization.users.with_raw_response.remove(who["user"].id)
    assert raw.parse().type == "user_deleted"

    assert_error(admin_api(server, who["admin_key"]), 401, "authentication_error", "revoked")
    for key in who["keys"]:
        refused_on_data_plane(server, key["key"])
        assert client.organization.api_keys.retrieve(key["id"]).status == "inactive"
    assert data_plane(server, bystander.json()["key"]).status_code == 200
    event = the_event(server, raw.http_response)  # type: ignore[arg-type]
    assert (event["action"], event["target_id"]) == ("user.remove", who["user"].id)
    assert event["actor_type"] == "admin_api_key"
    assert event["details"] == {
        "email": who["user"].email,
        "reason": "removed",
        "offboarding_key_policy": "deactivate",
        "revoked_user_sessions": [grant["session_id"]],
        "revoked_user_tokens": grant["token_ids"],
        "revoked_admin_api_keys": [who["admin_key_id"]],
        "deactivated_api_keys": [k["id"] for k in who["keys"]],
        "kept_api_keys": [],
        "workspaces": [],
    }
    after_offboarding(server, grant)
    # every cache on every instance was told: the user, their admin key, each key
    told = cache_events_about(server, who["user"].id, who["admin_key_id"], *(k["id"] for k in who["keys"]))
    assert told >= {
        ("user", who["user"].id),
        ("admin_api_key", who["admin_key_id"]),
        *(("api_key", k["id"]) for k in who["keys"]),
    }
    # an admin can turn a key back on: it belongs to its workspace, not to the person
    client.organization.api_keys.update(who["keys"][0]["id"], status="active")
    assert settled(lambda: data_plane(server, who["keys"][0]["key"]), 200).status_code == 200


def test_with_the_keep_policy_the_keys_a_removed_user_created_keep_working(
    server: Server, client: anthropic.Anthropic, keep_policy: None
) -> None:
    who = admin_with_keys(server, client)
    raw = client.organization.users.with_raw_response.remove(who["user"].id)
    assert_error(admin_api(server, who["admin_key"]), 401, "authentication_error", "revoked")
    time.sleep(0.5)  # past a poll or two of cache_events: nothing told the caches to drop the keys
    for key in who["keys"]:
        assert data_plane(server, key["key"]).status_code == 200
        assert client.organization.api_keys.retrieve(key["id"]).status == "active"
    details = the_event(server, raw.http_response)["details"]  # type: ignore[arg-type]
    assert details["offboarding_key_policy"] == "keep"
    assert details["deactivated_api_keys"] == []
    assert details["kept_api_keys"] == [k["id"] for k in who["keys"]]
    assert details["revoked_admin_api_keys"] == [who["admin_key_id"]]


def test_keys_already_inactive_or_archived_are_left_as_they_are(server: Server, client: anthropic.Anthropic) -> None:
    who = admin_with_keys(server, client, n_keys=3)
    inactive, archived, live = who["keys"]
    client.organization.api_keys.update(inactive["id"], status="inactive")
    client.organization.api_keys.update(archived["id"], status="archived")
    raw = client.organization.users.with_raw_response.remove(who["user"].id)
    assert the_event(server, raw.http_response)["details"]["deactivated_api_keys"] == [live["id"]]  # type: ignore[arg-type]
    assert client.organization.api_keys.retrieve(archived["id"]).status == "archived"


# --- deactivation and reactivation -----------------------------------------------------------------------


def test_deactivating_a_user_offboards_them_and_reactivating_restores_only_the_user(
    server: Server, client: anthropic.Anthropic
) -> None:
    who = admin_with_keys(server, client)
    user_id = who["user"].id
    workspace = client.organization.workspaces.create(name=unique("offb"))
    client.organization.workspaces.members.add(workspace.id, user_id=user_id, workspace_role="workspace_developer")
    grant = sign_in(server, user_id)

    shown = json.loads(cli(server.db, "users", "deactivate", user_id, "--json").stdout)
    assert shown["id"] == user_id
    assert shown["deactivated_at"] is not None

    assert_error(admin_api(server, who["admin_key"]), 401, "authentication_error", "revoked")
    for key in who["keys"]:
        refused_on_data_plane(server, key["key"])
    event = audit_events(server)[-1]
    assert (event["action"], event["target_id"], event["actor_type"]) == ("user.deactivate", user_id, "cli")
    assert event["details"]["reason"] == "deactivated"
    assert event["details"]["revoked_admin_api_keys"] == [who["admin_key_id"]]
    assert event["details"]["deactivated_api_keys"] == [k["id"] for k in who["keys"]]
    assert event["details"]["revoked_user_tokens"] == grant["token_ids"]
    assert event["details"]["revoked_user_sessions"] == [grant["session_id"]]
    assert "workspaces" not in event["details"]
    after_offboarding(server, grant)
    # still a member of the organization and of the workspace, with the same role
    assert client.organization.users.retrieve(user_id).role == "admin"
    assert client.organization.workspaces.members.retrieve(user_id, workspace_id=workspace.id).user_id == user_id
    # a deactivated user cannot be given a new admin key
    refused = cli(server.db, "admin-keys", "create", "--user", user_id, check=False)
    assert refused.returncode == 1
    assert "is deactivated" in refused.stderr

    count = len(audit_events(server))
    again = json.loads(cli(server.db, "users", "deactivate", user_id, "--json").stdout)
    assert again["deactivated_at"] == shown["deactivated_at"]
    assert len(audit_events(server)) == count  # nothing changed, nothing recorded

    back = json.loads(cli(server.db, "users", "reactivate", user_id, "--json").stdout)
    assert back["deactivated_at"] is None
    assert user_row(server, user_id).deactivated_at is None
    event = audit_events(server)[-1]
    assert (event["action"], event["target_id"]) == ("user.reactivate", user_id)
    assert event["details"]["deactivated_at"] == shown["deactivated_at"]
    # what offboarding revoked stays revoked
    assert_error(admin_api(server, who["admin_key"]), 401, "authentication_error", "revoked")
    assert data_plane(server, who["keys"][0]["key"]).status_code == 401
    after_offboarding(server, grant)
    sign_in(server, user_id)  # but the user may sign in again: new tokens resolve
    # reactivating an active user changes nothing
    count = len(audit_events(server))
    cli(server.db, "users", "reactivate", user_id)
    assert len(audit_events(server)) == count


def test_a_deactivated_user_can_still_be_removed(server: Server, client: anthropic.Anthropic) -> None:
    user = new_user(server, client)
    cli(server.db, "users", "deactivate", user.id)
    removed = json.loads(cli(server.db, "users", "remove", user.id, "--json").stdout)
    assert removed == {"id": user.id, "type": "user_deleted"}
    assert audit_events(server)[-1]["action"] == "user.remove"
    with pytest.raises(anthropic.NotFoundError):
        client.organization.users.retrieve(user.id)


def test_unknown_users_are_refused_by_the_cli(server: Server) -> None:
    for command in ("deactivate", "reactivate", "remove"):
        result = cli(server.db, "users", command, "user_01nope", check=False)
        assert result.returncode == 1
        assert "user 'user_01nope' not found" in result.stderr


# --- the last enabled admin ------------------------------------------------------------------------------


def test_the_last_enabled_admin_can_be_neither_deactivated_removed_nor_demoted(
    server: Server, client: anthropic.Anthropic
) -> None:
    root = server.user["id"]
    for admin in client.organization.users.list(roles=["admin"], limit=1000):  # left by other tests
        if admin.id != root:
            cli(server.db, "users", "remove", admin.id)
    second = admin_with_keys(server, client, n_keys=0)["user"]
    # with two enabled admins, one may be deactivated; the other is then the last one
    cli(server.db, "users", "deactivate", second.id)
    try:
        refused = cli(server.db, "users", "deactivate", root, check=False)
        assert refused.returncode == 1
        assert "last admin and cannot be deactivated" in refused.stderr
        with server.http() as http:
            response = http.delete(f"/v1/organizations/users/{root}")
            assert_error(response, 400, "invalid_request_error", "last admin and cannot be removed")
            assert events_of_request(server, response.headers["request-id"]) == []
        assert user_row(server, root).deactivated_at is None
    finally:
        cli(server.db, "users", "reactivate", second.id)
    # a deactivated admin, once reactivated, counts again: the root admin may now be deactivated
    cli(server.db, "users", "remove", second.id)
