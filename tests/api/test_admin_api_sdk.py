"""Every Admin API endpoint driven with the official ``anthropic`` SDK against a real ``orgwarden serve``.

Each response must parse into the SDK's own types with the right values, and the SDK's own page
iterator must walk lists forward (``after_id``) and backward (``before_id``) without gaps or repeats.
Tests in this module share one organization per backend, so every name is unique and every count is
taken over objects the test created itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx
import pytest
from anthropic.types import OrganizationInfo
from anthropic.types.organization import (
    APIKey,
    InviteDeleteResponse,
    OrganizationInvite,
    OrganizationUser,
    UserRemoveResponse,
    Workspace,
    WorkspaceMember,
)
from anthropic.types.organization.api_key_user_actor import APIKeyUserActor
from anthropic.types.organization.api_key_workspace_scope import APIKeyWorkspaceScope
from anthropic.types.organization.workspaces import MemberRemoveResponse

from tests.conftest import TLS, Server, assert_error, unique

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
API_KEY_SECRET = re.compile(r"^sk-ant-api03-[A-Za-z0-9_-]{93}AA$")
API_KEY_HINT = re.compile(r"^sk-ant-api03-[A-Za-z0-9_-]{3}\.\.\.[A-Za-z0-9_-]{4}$")


# --- helpers -----------------------------------------------------------------------------------------


def email() -> str:
    return f"{unique('u')}@acme.test"


def create_invite(client: anthropic.Anthropic, address: str, role: str = "developer") -> tuple[OrganizationInvite, str]:
    """Create an invite with the SDK; return it and the token from the (extension) ``accept_url``."""
    raw = client.organization.invites.with_raw_response.create(email=address, role=role)  # type: ignore[arg-type]
    invite = raw.parse()
    accept_url = raw.http_response.json()["accept_url"]
    fragment = urlsplit(accept_url).fragment
    assert fragment.startswith("token="), accept_url
    return invite, fragment.removeprefix("token=")


def accept(server: Server, token: str, name: str) -> dict[str, Any]:
    """The accept extension needs no admin key: the token alone authenticates."""
    response = httpx.post(
        f"{server.base_url}/v1/invites/accept", json={"token": token, "name": name}, timeout=30, verify=TLS
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def new_user(server: Server, client: anthropic.Anthropic, role: str = "developer") -> OrganizationUser:
    address = email()
    _, token = create_invite(client, address, role)
    accept(server, token, f"User {address}")
    users = client.organization.users.list(email=address).data
    assert len(users) == 1
    return users[0]


def create_key(
    server: Server, name: str, workspace_id: str | None = None, expires_at: str | None = None
) -> dict[str, Any]:
    """``POST /v1/organizations/api_keys`` is an extension the SDK has no method for."""
    body: dict[str, Any] = {"name": name, "workspace_id": workspace_id}
    if expires_at is not None:
        body["expires_at"] = expires_at
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ids_of(items: Iterable[Any], attr: str = "id") -> list[str]:
    return [getattr(item, attr) for item in items]


def backward_walk(ids: Sequence[str], size: int) -> list[str]:
    """The order the SDK yields items when it pages backward: pages of ``size`` from the end, each
    page itself in ascending order."""
    out: list[str] = []
    end = len(ids)
    while end > 0:
        out.extend(ids[max(0, end - size) : end])
        end -= size
    return out


def default_workspace_id(server: Server) -> str:
    return str(create_key(server, unique("probe"))["scope"]["workspace_id"])


# --- organization and authentication -----------------------------------------------------------------


def test_me_parses_into_organization_info(server: Server, client: anthropic.Anthropic) -> None:
    org = client.organization.retrieve()
    assert isinstance(org, OrganizationInfo)
    assert (org.id, org.name, org.type) == (server.organization["id"], "Acme", "organization")


def test_the_sdk_authenticates_with_a_bearer_token(server: Server, client: anthropic.Anthropic) -> None:
    raw = client.organization.with_raw_response.retrieve()
    sent = raw.http_response.request.headers
    assert sent["authorization"] == f"Bearer {server.admin_key}"
    assert "x-api-key" not in sent
    assert raw.http_response.status_code == 200
    assert raw.headers["request-id"].startswith("req_")


def test_x_api_key_and_bearer_both_work_over_plain_http(server: Server) -> None:
    url = f"{server.base_url}/v1/organizations/me"
    with_key = httpx.get(url, headers={"x-api-key": server.admin_key, "anthropic-version": "2023-06-01"}, verify=TLS)
    with_bearer = httpx.get(url, headers={"authorization": f"Bearer {server.admin_key}"}, verify=TLS)
    assert with_key.status_code == with_bearer.status_code == 200
    assert with_key.json() == with_bearer.json() == {"id": server.organization["id"], "name": "Acme",
                                                      "type": "organization"}  # fmt: skip
    assert_error(httpx.get(url, verify=TLS), 401, "authentication_error", "")


# --- invites -----------------------------------------------------------------------------------------


def test_creating_an_invite_returns_an_organization_invite_with_an_accept_url(
    server: Server, client: anthropic.Anthropic
) -> None:
    address = email()
    raw = client.organization.invites.with_raw_response.create(email=address, role="billing")
    invite = raw.parse()
    assert isinstance(invite, OrganizationInvite)
    assert invite.id.startswith("invite_01")
    assert (invite.email, invite.role, invite.status, invite.type) == (address, "billing", "pending", "invite")
    assert invite.accepted_at is None
    assert invite.rbac_group_ids == []
    assert timedelta(days=20, hours=23) < invite.expires_at - invite.invited_at <= timedelta(days=21)
    body = raw.http_response.json()
    assert body["accept_url"].startswith(f"{server.base_url}/invites/accept#token=")
    for field in ("invited_at", "expires_at"):
        assert TIMESTAMP.match(body[field]), body[field]


def test_an_invite_can_be_retrieved(client: anthropic.Anthropic) -> None:
    created, _ = create_invite(client, email(), "user")
    fetched = client.organization.invites.retrieve(created.id)
    assert isinstance(fetched, OrganizationInvite)
    assert fetched.to_dict() == {k: v for k, v in created.to_dict().items() if k != "accept_url"}


def test_invites_are_listed_with_email_roles_and_statuses_filters(server: Server, client: anthropic.Anthropic) -> None:
    pending_address, accepted_address = email(), email()
    pending, _ = create_invite(client, pending_address, "claude_code_user")
    accepted_invite, token = create_invite(client, accepted_address, "developer")
    accept(server, token, "Ada")

    by_email = client.organization.invites.list(email=pending_address)
    assert all(isinstance(i, OrganizationInvite) for i in by_email.data)
    assert ids_of(by_email.data) == [pending.id]
    assert client.organization.invites.list(email=email()).data == []

    by_role = ids_of(client.organization.invites.list(roles=["claude_code_user"], limit=1000))
    assert pending.id in by_role
    assert accepted_invite.id not in by_role
    both_roles = ids_of(client.organization.invites.list(roles=["claude_code_user", "developer"], limit=1000))
    assert {pending.id, accepted_invite.id} <= set(both_roles)

    accepted_only = client.organization.invites.list(statuses=["accepted"], limit=1000).data
    assert accepted_invite.id in ids_of(accepted_only)
    assert pending.id not in ids_of(accepted_only)
    assert {i.status for i in accepted_only} == {"accepted"}
    [row] = [i for i in accepted_only if i.id == accepted_invite.id]
    assert row.accepted_at is not None
    pending_only = client.organization.invites.list(statuses=["pending"], email=pending_address).data
    assert ids_of(pending_only) == [pending.id]
    assert client.organization.invites.list(statuses=["accepted"], email=pending_address).data == []


def test_deleting_an_invite_marks_it_deleted_and_hides_it_from_the_default_list(client: anthropic.Anthropic) -> None:
    address = email()
    invite, _ = create_invite(client, address)
    deleted = client.organization.invites.delete(invite.id)
    assert isinstance(deleted, InviteDeleteResponse)
    assert (deleted.id, deleted.type) == (invite.id, "invite_deleted")

    assert client.organization.invites.retrieve(invite.id).status == "deleted"
    assert client.organization.invites.list(email=address).data == []
    listed = client.organization.invites.list(email=address, statuses=["deleted"]).data  # type: ignore[list-item]
    assert ids_of(listed) == [invite.id]
    assert listed[0].status == "deleted"

    again = client.organization.invites.delete(invite.id)  # idempotent
    assert (again.id, again.type) == (invite.id, "invite_deleted")
    # The email is free again for a fresh invite.
    fresh, _ = create_invite(client, address)
    assert fresh.id != invite.id
    assert fresh.status == "pending"


def test_an_accepted_invite_cannot_be_deleted(server: Server, client: anthropic.Anthropic) -> None:
    invite, token = create_invite(client, email())
    accept(server, token, "Grace")
    with pytest.raises(anthropic.ConflictError):
        client.organization.invites.delete(invite.id)
    assert client.organization.invites.retrieve(invite.id).status == "accepted"


# --- users -------------------------------------------------------------------------------------------


def test_accepting_an_invite_creates_a_user_with_the_invites_role(server: Server, client: anthropic.Anthropic) -> None:
    address = email()
    invite, token = create_invite(client, address, "billing")
    body = accept(server, token, "  Linus Billing ")
    user = client.organization.users.retrieve(body["id"])
    assert isinstance(user, OrganizationUser)
    assert user.id.startswith("user_01")
    assert (user.email, user.name, user.role, user.type) == (address, "Linus Billing", "billing", "user")
    assert body == {**body, "email": address, "role": "billing", "type": "user"}
    assert TIMESTAMP.match(body["added_at"])
    accepted = client.organization.invites.retrieve(invite.id)
    assert accepted.status == "accepted"
    assert accepted.accepted_at is not None
    assert accepted.accepted_at == user.added_at


def test_the_admin_created_by_init_is_a_user(server: Server, client: anthropic.Anthropic) -> None:
    admin = client.organization.users.retrieve(server.user["id"])
    assert isinstance(admin, OrganizationUser)
    assert (admin.email, admin.role) == ("root@acme.test", "admin")
    admins = client.organization.users.list(roles=["admin"]).data
    assert ids_of(admins) == [server.user["id"]]


def test_users_are_listed_with_the_email_filter(server: Server, client: anthropic.Anthropic) -> None:
    first, second = new_user(server, client), new_user(server, client)
    page = client.organization.users.list(email=first.email)
    assert all(isinstance(u, OrganizationUser) for u in page.data)
    assert ids_of(page.data) == [first.id]
    assert page.has_more is False
    assert page.first_id == page.last_id == first.id
    everyone = ids_of(client.organization.users.list(limit=1000))
    assert everyone.index(first.id) < everyone.index(second.id)
    assert client.organization.users.list(email=email()).data == []


def test_a_users_role_can_be_updated(server: Server, client: anthropic.Anthropic) -> None:
    user = new_user(server, client, "user")
    updated = client.organization.users.update(user.id, role="developer")
    assert isinstance(updated, OrganizationUser)
    assert (updated.id, updated.role, updated.email) == (user.id, "developer", user.email)
    assert client.organization.users.retrieve(user.id).role == "developer"
    assert user.id in ids_of(client.organization.users.list(roles=["developer"], limit=1000))
    assert user.id not in ids_of(client.organization.users.list(roles=["user"], limit=1000))
    with pytest.raises(anthropic.BadRequestError, match="admin"):
        client.organization.users.update(user.id, role="admin")  # type: ignore[arg-type]


def test_removing_a_user_returns_user_deleted_and_drops_their_memberships(
    server: Server, client: anthropic.Anthropic
) -> None:
    user = new_user(server, client)
    workspace = client.organization.workspaces.create(name=unique("ws"))
    client.organization.workspaces.members.add(workspace.id, user_id=user.id, workspace_role="workspace_user")

    removed = client.organization.users.remove(user.id)
    assert isinstance(removed, UserRemoveResponse)
    assert (removed.id, removed.type) == (user.id, "user_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.organization.users.retrieve(user.id)
    assert client.organization.users.list(email=user.email).data == []
    assert client.organization.workspaces.members.list(workspace.id).data == []

    # The address is free again: a new invite makes a new user.
    _, token = create_invite(client, user.email, "user")
    rejoined = accept(server, token, "Back Again")
    assert rejoined["id"] != user.id
    assert rejoined["email"] == user.email
    assert ids_of(client.organization.users.list(email=user.email).data) == [rejoined["id"]]


# --- workspaces --------------------------------------------------------------------------------------


def test_creating_a_workspace_with_tags_data_residency_and_display_color(
    server: Server, client: anthropic.Anthropic
) -> None:
    name = unique("production")
    raw = client.organization.workspaces.with_raw_response.create(
        name=name,
        tags={"env": "prod", "team": "platform"},
        data_residency={"allowed_inference_geos": ["us"], "default_inference_geo": "us"},
        display_color="#3C7CDB",
    )
    workspace = raw.parse()
    assert isinstance(workspace, Workspace)
    assert workspace.id.startswith("wrkspc_01")
    assert (workspace.name, workspace.type, workspace.display_color) == (name, "workspace", "#3C7CDB")
    assert workspace.tags == {"env": "prod", "team": "platform"}
    assert workspace.data_residency.allowed_inference_geos == ["us"]
    assert workspace.data_residency.default_inference_geo == "us"
    assert workspace.data_residency.workspace_geo == "us"
    assert workspace.archived_at is None
    assert workspace.compartment_id == "cmpt_" + workspace.id.removeprefix("wrkspc_")
    assert workspace.external_key_id is None
    assert workspace.user_profile_id is None
    assert TIMESTAMP.match(raw.http_response.json()["created_at"])


def test_a_workspace_created_with_only_a_name_gets_the_spec_defaults(client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("plain"))
    assert workspace.tags == {}
    assert workspace.data_residency.allowed_inference_geos == "unrestricted"
    assert workspace.data_residency.default_inference_geo == "global"
    assert workspace.data_residency.workspace_geo == "us"
    assert re.match(r"^#[0-9A-F]{6}$", workspace.display_color)


def test_a_workspace_can_be_retrieved(client: anthropic.Anthropic) -> None:
    created = client.organization.workspaces.create(name=unique("get"), tags={"k": "v"})
    fetched = client.organization.workspaces.retrieve(created.id)
    assert isinstance(fetched, Workspace)
    assert fetched == created


def test_listing_workspaces_honours_ids_include_default_and_include_archived(
    server: Server, client: anthropic.Anthropic
) -> None:
    active = client.organization.workspaces.create(name=unique("active"))
    archived = client.organization.workspaces.create(name=unique("archived"))
    client.organization.workspaces.archive(archived.id)
    default_id = default_workspace_id(server)
    wanted = [default_id, active.id, archived.id]

    plain = client.organization.workspaces.list(ids=wanted)
    assert all(isinstance(w, Workspace) for w in plain.data)
    assert ids_of(plain.data) == [active.id]
    assert ids_of(client.organization.workspaces.list(ids=wanted, include_archived=True).data) == [
        active.id,
        archived.id,
    ]
    assert ids_of(client.organization.workspaces.list(ids=wanted, include_default=True).data) == [
        default_id,
        active.id,
    ]
    both = client.organization.workspaces.list(ids=wanted, include_default=True, include_archived=True).data
    assert ids_of(both) == wanted
    assert both[0].name == "Default"

    everything = ids_of(client.organization.workspaces.list(limit=1000))
    assert active.id in everything
    assert archived.id not in everything
    assert default_id not in everything


def test_updating_a_workspace_renames_it_merges_tags_and_changes_data_residency(client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(
        name=unique("before"), tags={"env": "prod", "team": "platform"}, display_color="#6C5BB9"
    )
    new_name = unique("after")
    updated = client.organization.workspaces.update(
        workspace.id,
        name=new_name,
        tags={"team": None, "tier": "gold"},
        data_residency={"allowed_inference_geos": ["us"], "default_inference_geo": "us"},
        display_color="#2E9E6E",
    )
    assert isinstance(updated, Workspace)
    assert (updated.id, updated.name, updated.display_color) == (workspace.id, new_name, "#2E9E6E")
    assert updated.tags == {"env": "prod", "tier": "gold"}
    assert updated.data_residency.allowed_inference_geos == ["us"]
    assert updated.data_residency.default_inference_geo == "us"
    assert updated.created_at == workspace.created_at
    assert client.organization.workspaces.retrieve(workspace.id) == updated

    # Only the fields sent change; residency can go back to unrestricted.
    again = client.organization.workspaces.update(
        workspace.id, data_residency={"allowed_inference_geos": "unrestricted", "default_inference_geo": "global"}
    )
    assert (again.name, again.tags, again.display_color) == (new_name, {"env": "prod", "tier": "gold"}, "#2E9E6E")
    assert again.data_residency.allowed_inference_geos == "unrestricted"
    assert again.data_residency.default_inference_geo == "global"


def test_archiving_a_workspace_archives_its_keys_and_is_idempotent(server: Server, client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("doomed"))
    keys = [create_key(server, unique("k"), workspace.id) for _ in range(2)]
    client.organization.api_keys.update(keys[1]["id"], status="inactive")
    elsewhere = create_key(server, unique("other"))

    archived = client.organization.workspaces.archive(workspace.id)
    assert isinstance(archived, Workspace)
    assert archived.id == workspace.id
    assert archived.archived_at is not None
    for key in keys:
        assert client.organization.api_keys.retrieve(key["id"]).status == "archived"
    assert client.organization.api_keys.retrieve(elsewhere["id"]).status == "active"
    listed = client.organization.api_keys.list(workspace_id=workspace.id, status="archived").data
    assert sorted(ids_of(listed)) == sorted(k["id"] for k in keys)

    again = client.organization.workspaces.archive(workspace.id)
    assert again.archived_at == archived.archived_at
    assert client.organization.workspaces.retrieve(workspace.id).archived_at == archived.archived_at
    with pytest.raises(anthropic.BadRequestError, match="archived"):
        client.organization.api_keys.update(keys[0]["id"], status="active")


def test_the_default_workspace_cannot_be_archived(server: Server, client: anthropic.Anthropic) -> None:
    default_id = default_workspace_id(server)
    with pytest.raises(anthropic.BadRequestError, match="default workspace"):
        client.organization.workspaces.archive(default_id)
    assert client.organization.workspaces.retrieve(default_id).archived_at is None


# --- members -----------------------------------------------------------------------------------------


def test_members_can_be_added_retrieved_listed_updated_and_removed(server: Server, client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("team"))
    user = new_user(server, client)
    members = client.organization.workspaces.members

    added = members.add(workspace.id, user_id=user.id, workspace_role="workspace_developer")
    assert isinstance(added, WorkspaceMember)
    assert (added.type, added.user_id, added.workspace_id, added.workspace_role) == (
        "workspace_member", user.id, workspace.id, "workspace_developer",
    )  # fmt: skip
    fetched = members.retrieve(user.id, workspace_id=workspace.id)
    assert isinstance(fetched, WorkspaceMember)
    assert fetched == added

    page = members.list(workspace.id)
    assert page.data == [added]
    assert (page.first_id, page.last_id, page.has_more) == (user.id, user.id, False)

    updated = members.update(user.id, workspace_id=workspace.id, workspace_role="workspace_billing")
    assert isinstance(updated, WorkspaceMember)
    assert updated.workspace_role == "workspace_billing"
    assert members.retrieve(user.id, workspace_id=workspace.id).workspace_role == "workspace_billing"

    with pytest.raises(anthropic.ConflictError):
        members.add(workspace.id, user_id=user.id, workspace_role="workspace_user")

    removed = members.remove(user.id, workspace_id=workspace.id)
    assert isinstance(removed, MemberRemoveResponse)
    assert (removed.type, removed.user_id, removed.workspace_id) == ("workspace_member_deleted", user.id, workspace.id)
    assert members.list(workspace.id).data == []
    with pytest.raises(anthropic.NotFoundError):
        members.retrieve(user.id, workspace_id=workspace.id)
    # The user is still in the organization.
    assert client.organization.users.retrieve(user.id).id == user.id


# --- API keys ----------------------------------------------------------------------------------------


def test_creating_an_api_key_returns_its_secret_only_in_that_response(
    server: Server, client: anthropic.Anthropic
) -> None:
    workspace = client.organization.workspaces.create(name=unique("keys"))
    name = unique("prod-recommendation-service")
    body = create_key(server, name, workspace.id)
    assert API_KEY_SECRET.match(body["key"]), body["key"]
    assert body["partial_key_hint"] == f"{body['key'][:16]}...{body['key'][-4:]}"
    assert API_KEY_HINT.match(body["partial_key_hint"])
    assert TIMESTAMP.match(body["created_at"])
    assert body["expires_at"] is None
    assert APIKey.model_validate(body).name == name

    key = client.organization.api_keys.retrieve(body["id"])
    assert isinstance(key, APIKey)
    assert key.id.startswith("apikey_01")
    assert (key.name, key.status, key.type, key.workspace_id) == (name, "active", "api_key", workspace.id)
    assert key.partial_key_hint == body["partial_key_hint"]
    assert key.created_by is not None
    assert (key.created_by.id, key.created_by.type) == (server.user["id"], "user")
    assert isinstance(key.scope, APIKeyWorkspaceScope)
    assert key.scope.workspace_id == workspace.id
    assert key.principal is None or isinstance(key.principal, APIKeyUserActor)

    with server.http() as http:
        for response in (
            http.get(f"/v1/organizations/api_keys/{key.id}"),
            http.get("/v1/organizations/api_keys", params={"workspace_id": workspace.id}),
        ):
            assert response.status_code == 200
            assert body["key"] not in response.text
            assert '"key"' not in response.text


def test_a_key_in_the_default_workspace_has_a_null_workspace_id_and_a_real_scope(
    server: Server, client: anthropic.Anthropic
) -> None:
    body = create_key(server, unique("default-ws"))
    assert body["workspace_id"] is None
    default_id = body["scope"]["workspace_id"]
    assert body["scope"] == {"type": "workspace", "workspace_id": default_id}
    assert default_id.startswith("wrkspc_01")
    assert client.organization.workspaces.retrieve(default_id).name == "Default"

    key = client.organization.api_keys.retrieve(body["id"])
    assert key.workspace_id is None
    assert isinstance(key.scope, APIKeyWorkspaceScope)
    assert key.scope.workspace_id == default_id
    listed = client.organization.api_keys.list(workspace_id=default_id, limit=1000)
    assert body["id"] in ids_of(listed)


def test_an_api_key_can_expire(server: Server, client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("expiring"))
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    body = create_key(server, unique("short"), workspace.id, expires.isoformat().replace("+00:00", "Z"))
    key = client.organization.api_keys.retrieve(body["id"])
    assert key.status == "active"
    assert key.expires_at == expires
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.3)
    assert client.organization.api_keys.retrieve(body["id"]).status == "expired"
    assert ids_of(client.organization.api_keys.list(workspace_id=workspace.id, status="expired").data) == [key.id]
    assert client.organization.api_keys.list(workspace_id=workspace.id, status="active").data == []
    with pytest.raises(anthropic.BadRequestError, match="expired"):
        client.organization.api_keys.update(key.id, status="active")


def test_api_keys_are_listed_with_creator_status_and_workspace_filters(
    server: Server, client: anthropic.Anthropic
) -> None:
    workspace = client.organization.workspaces.create(name=unique("filters"))
    first, second = (create_key(server, unique("k"), workspace.id) for _ in range(2))
    client.organization.api_keys.update(second["id"], status="inactive")
    outsider = new_user(server, client)
    keys = client.organization.api_keys

    in_workspace = keys.list(workspace_id=workspace.id)
    assert all(isinstance(k, APIKey) for k in in_workspace.data)
    assert ids_of(in_workspace.data) == [first["id"], second["id"]]
    assert ids_of(keys.list(workspace_id=workspace.id, status="active").data) == [first["id"]]
    assert ids_of(keys.list(workspace_id=workspace.id, status="inactive").data) == [second["id"]]
    assert keys.list(workspace_id=workspace.id, status="archived").data == []
    by_admin = keys.list(workspace_id=workspace.id, created_by_user_id=server.user["id"]).data
    assert ids_of(by_admin) == [first["id"], second["id"]]
    assert keys.list(workspace_id=workspace.id, created_by_user_id=outsider.id).data == []
    org_wide = ids_of(keys.list(created_by_user_id=server.user["id"], limit=1000))
    assert {first["id"], second["id"]} <= set(org_wide)
    assert {k.status for k in keys.list(status="inactive", limit=1000)} == {"inactive"}


def test_an_api_key_can_be_renamed_and_its_status_changed(server: Server, client: anthropic.Anthropic) -> None:
    body = create_key(server, unique("old-name"))
    new_name = unique("new-name")
    renamed = client.organization.api_keys.update(body["id"], name=new_name)
    assert isinstance(renamed, APIKey)
    assert (renamed.id, renamed.name, renamed.status) == (body["id"], new_name, "active")
    assert renamed.workspace_id is None

    inactive = client.organization.api_keys.update(body["id"], status="inactive")
    assert (inactive.name, inactive.status) == (new_name, "inactive")
    active = client.organization.api_keys.update(body["id"], status="active")
    assert active.status == "active"
    archived = client.organization.api_keys.update(body["id"], status="archived")
    assert archived.status == "archived"
    assert client.organization.api_keys.retrieve(body["id"]) == archived
    with pytest.raises(anthropic.BadRequestError, match="archived"):
        client.organization.api_keys.update(body["id"], name=unique("again"))


# --- pagination with the SDK's own iterator ----------------------------------------------------------


def test_workspaces_page_forward_with_the_sdk_iterator(client: anthropic.Anthropic) -> None:
    tag = unique("batch")
    created = [client.organization.workspaces.create(name=unique("pg"), tags={"batch": tag}).id for _ in range(7)]

    first = client.organization.workspaces.list(limit=2, ids=created)
    assert ids_of(first.data) == created[:2]
    assert (first.first_id, first.last_id, first.has_more) == (created[0], created[1], True)
    walked = [w for w in client.organization.workspaces.list(limit=2, ids=created)]
    assert ids_of(walked) == created
    assert all(w.tags == {"batch": tag} for w in walked)
    pages = list(client.organization.workspaces.list(limit=2, ids=created).iter_pages())
    assert [ids_of(p.data) for p in pages] == [created[0:2], created[2:4], created[4:6], created[6:7]]
    assert [p.has_more for p in pages] == [True, True, True, False]

    last = client.organization.workspaces.list(limit=2, ids=created, after_id=created[4])
    assert (ids_of(last.data), last.has_more) == ([created[5], created[6]], False)
    empty = client.organization.workspaces.list(ids=created, after_id=created[6])
    assert (empty.data, empty.first_id, empty.last_id, empty.has_more) == ([], None, None, False)


def test_workspaces_page_backward_with_the_sdk_iterator(client: anthropic.Anthropic) -> None:
    created = [client.organization.workspaces.create(name=unique("bk")).id for _ in range(7)]
    sentinel = client.organization.workspaces.create(name=unique("sentinel")).id

    page = client.organization.workspaces.list(limit=2, before_id=sentinel, ids=[*created, sentinel])
    assert ids_of(page.data) == created[5:7]
    assert (page.first_id, page.last_id, page.has_more) == (created[5], created[6], True)
    walked = ids_of(client.organization.workspaces.list(limit=2, before_id=sentinel, ids=[*created, sentinel]))
    assert walked == backward_walk(created, 2)
    assert walked == [*created[5:7], *created[3:5], *created[1:3], created[0]]

    # Without a filter the walk covers every active workspace before the sentinel, each exactly once.
    everything = ids_of(client.organization.workspaces.list(limit=1000))
    before = [i for i in everything if i < sentinel]
    walked_all = ids_of(client.organization.workspaces.list(limit=2, before_id=sentinel))
    assert walked_all == backward_walk(before, 2)
    assert len(walked_all) == len(set(walked_all))
    assert set(created) <= set(walked_all)


def test_invites_page_forward_and_backward_with_the_sdk_iterator(client: anthropic.Anthropic) -> None:
    created = [create_invite(client, email())[0].id for _ in range(5)]
    sentinel = create_invite(client, email())[0].id

    everything = ids_of(client.organization.invites.list(limit=1000))
    assert everything == sorted(everything)
    forward = ids_of(client.organization.invites.list(limit=2))
    assert forward == everything
    assert [i for i in forward if i in created] == created

    page = client.organization.invites.list(limit=2, before_id=sentinel)
    assert ids_of(page.data) == created[3:5]
    assert (page.first_id, page.last_id, page.has_more) == (created[3], created[4], True)
    before = [i for i in everything if i < sentinel]
    backward = ids_of(client.organization.invites.list(limit=2, before_id=sentinel))
    assert backward == backward_walk(before, 2)
    assert len(backward) == len(set(backward))
    assert [i for i in backward if i in created] == [*created[3:5], *created[1:3], created[0]]


def test_members_page_forward_and_backward_with_the_sdk_iterator(server: Server, client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("crowd"))
    users = [new_user(server, client).id for _ in range(6)]
    members = client.organization.workspaces.members
    for user_id in users:
        members.add(workspace.id, user_id=user_id, workspace_role="workspace_user")

    first = members.list(workspace.id, limit=2)
    assert (ids_of(first.data, "user_id"), first.first_id, first.last_id, first.has_more) == (
        users[:2], users[0], users[1], True,
    )  # fmt: skip
    forward = list(members.list(workspace.id, limit=2))
    assert all(isinstance(m, WorkspaceMember) and m.workspace_id == workspace.id for m in forward)
    assert ids_of(forward, "user_id") == users

    backward = ids_of(members.list(workspace.id, limit=2, before_id=users[5]), "user_id")
    assert backward == [*users[3:5], *users[1:3], users[0]]
    after = members.list(workspace.id, limit=2, after_id=users[3])
    assert (ids_of(after.data, "user_id"), after.has_more) == (users[4:6], False)


def test_api_keys_and_users_page_forward_and_backward_with_the_sdk_iterator(
    server: Server, client: anthropic.Anthropic
) -> None:
    workspace = client.organization.workspaces.create(name=unique("many-keys"))
    keys = [create_key(server, unique("k"), workspace.id)["id"] for _ in range(5)]
    assert ids_of(client.organization.api_keys.list(workspace_id=workspace.id, limit=2)) == keys
    backward = client.organization.api_keys.list(workspace_id=workspace.id, limit=2, before_id=keys[4])
    assert ids_of(backward) == [*keys[2:4], *keys[0:2]]

    everyone = ids_of(client.organization.users.list(limit=1000))
    assert ids_of(client.organization.users.list(limit=3)) == everyone
    assert ids_of(client.organization.users.list(limit=3, before_id=everyone[-1])) == backward_walk(everyone[:-1], 3)
