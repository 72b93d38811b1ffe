"""/scim/v2 against a real server (SQLite and PostgreSQL): tokens, users, groups, filters, paging,
PATCH, ETags, SCIM errors, and the roles groups grant (seen through the official SDK)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import TLS, Server, cli, query_db, unique

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def assert_scim_error(response: httpx.Response, status: int, detail_part: str, scim_type: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [ERROR], body
    assert body["status"] == str(status), body
    assert detail_part.lower() in body["detail"].lower(), body
    if scim_type is not None:
        assert body["scimType"] == scim_type, body


def new_user(scim: httpx.Client, **extra: Any) -> dict[str, Any]:
    email = f"{unique('p')}@acme.test"
    payload = {"schemas": [USER], "userName": email, "name": {"givenName": "Ada", "familyName": "L"}, **extra}
    response = scim.post("/Users", json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == body["meta"]["location"]
    assert response.headers["etag"] == body["meta"]["version"]
    return body


def patch(scim: httpx.Client, path: str, *operations: dict[str, Any], **headers: str) -> httpx.Response:
    return scim.patch(path, json={"schemas": [PATCH], "Operations": list(operations)}, headers=headers)


def events(server: Server, action: str) -> list[Any]:
    async def query(uow: Any) -> list[Any]:
        from sqlalchemy import select

        from orgwarden.storage.tables import AuditEvent

        rows = await uow.audit.session.scalars(select(AuditEvent).where(AuditEvent.action == action))
        return list(rows.all())

    found: list[Any] = query_db(server.db, query)
    return found


def test_scim_refuses_requests_without_a_valid_token_with_a_scim_401(server: Server) -> None:
    base = f"{server.base_url}/scim/v2"
    assert_scim_error(httpx.get(f"{base}/Users", verify=TLS), 401, "missing credentials")
    bogus = {"authorization": "Bearer ow-scim01-not-a-token"}
    assert_scim_error(httpx.get(f"{base}/Users", headers=bogus, verify=TLS), 401, "invalid SCIM token")
    admin = {"authorization": f"Bearer {server.admin_key}"}
    assert_scim_error(httpx.get(f"{base}/Users", headers=admin, verify=TLS), 401, "invalid SCIM token")
    created = json.loads(cli(server.db, "scim-token", "create", "--name", "okta", "--json").stdout)
    good = {"authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{base}/Users", headers=good, verify=TLS).status_code == 200
    listed = json.loads(cli(server.db, "scim-token", "list", "--json").stdout)
    mine = next(t for t in listed if t["id"] == created["id"])
    assert mine["status"] == "active"
    assert created["token"] not in json.dumps(listed)
    cli(server.db, "scim-token", "revoke", created["id"])
    assert_scim_error(httpx.get(f"{base}/Users", headers=good, verify=TLS), 401, "revoked")
    refused = [e for e in events(server, "scim.authenticate") if e.outcome == "denied"]
    assert {e.details["reason"] for e in refused} >= {"missing", "unknown", "revoked"}
    assert {e.action for e in events(server, "scim_token.create")} == {"scim_token.create"}
    assert [e.target_id for e in events(server, "scim_token.revoke")] == [created["id"]]


def test_discovery_declares_what_is_supported(scim: httpx.Client) -> None:
    config = scim.get("/ServiceProviderConfig").json()
    assert config["patch"] == {"supported": True}
    assert config["bulk"]["supported"] is False
    assert config["sort"] == {"supported": False}
    assert config["changePassword"] == {"supported": False}
    assert config["etag"] == {"supported": True}
    assert config["filter"] == {"supported": True, "maxResults": 200}
    types = {r["id"]: r for r in scim.get("/ResourceTypes").json()["Resources"]}
    assert types["User"]["endpoint"] == "/Users"
    assert types["Group"]["schema"] == GROUP
    schemas = {s["id"]: s for s in scim.get("/Schemas").json()["Resources"]}
    assert "password" not in {a["name"] for a in schemas[USER]["attributes"]}
    assert scim.get(f"/Schemas/{GROUP}").json()["id"] == GROUP


def test_creating_a_user_makes_an_organization_member_with_the_user_role(
    server: Server, scim: httpx.Client, client: anthropic.Anthropic
) -> None:
    body = new_user(scim, externalId="okta-1", emails=[{"value": "other@acme.com", "primary": True}])
    member = client.organization.users.retrieve(body["id"])
    assert (member.email, member.name, member.role) == (body["userName"], "Ada L", "user")
    assert body["externalId"] == "okta-1"
    assert body["emails"] == [{"value": "other@acme.com", "primary": True}]
    again = scim.post("/Users", json={"schemas": [USER], "userName": body["userName"].upper()})
    assert_scim_error(again, 409, "exists already", "uniqueness")
    assert [e.target_id for e in events(server, "scim.user.create") if e.target_id == body["id"]] == [body["id"]]


def test_a_member_who_exists_already_is_adopted_not_duplicated(
    server: Server, scim: httpx.Client, client: anthropic.Anthropic
) -> None:
    body = new_user(scim, userName="ROOT@acme.test")
    assert body["id"] == server.user["id"]
    assert client.organization.users.retrieve(body["id"]).role == "admin"


def test_filters_and_pages(scim: httpx.Client) -> None:
    tag = unique("f")
    made = [new_user(scim, externalId=f"{tag}-{i}") for i in range(3)]
    found = scim.get("/Users", params={"filter": f'userName eq "{made[1]["userName"].upper()}"'}).json()
    assert found["totalResults"] == 1
    assert [r["id"] for r in found["Resources"]] == [made[1]["id"]]
    by_external = scim.get("/Users", params={"filter": f'externalId eq "{tag}-2"'}).json()
    assert [r["id"] for r in by_external["Resources"]] == [made[2]["id"]]
    general = scim.get("/Users", params={"filter": f'externalId sw "{tag}"', "count": "2", "startIndex": "2"}).json()
    assert (general["totalResults"], general["startIndex"], general["itemsPerPage"]) == (3, 2, 2)
    assert [r["id"] for r in general["Resources"]] == [made[1]["id"], made[2]["id"]]
    attrs = scim.get("/Users", params={"filter": f'externalId eq "{tag}-0"', "attributes": "userName"}).json()
    assert set(attrs["Resources"][0]) == {"schemas", "id", "userName"}
    none = scim.get("/Users", params={"filter": 'userName eq "nobody@acme.test"'}).json()
    assert (none["totalResults"], none["Resources"]) == (0, [])
    searched = scim.post("/Users/.search", json={"filter": f'externalId eq "{tag}-1"'}).json()
    assert [r["id"] for r in searched["Resources"]] == [made[1]["id"]]
    assert_scim_error(scim.get("/Users", params={"filter": "userName eq"}), 400, "filter", "invalidFilter")
    assert_scim_error(scim.get("/Users", params={"count": "x"}), 400, "count", "invalidValue")


def test_deactivating_reactivating_and_deleting_a_user(
    server: Server, scim: httpx.Client, client: anthropic.Anthropic
) -> None:
    body = new_user(scim, active=True)
    path = f"/Users/{body['id']}"
    off = patch(scim, path, {"op": "Replace", "path": "active", "value": "False"})  # as Entra ID sends it
    assert off.status_code == 200, off.text
    assert off.json()["active"] is False

    async def deactivated(uow: Any) -> Any:
        user = await uow.users.get(server.organization["id"], body["id"])
        return user.deactivated_at

    assert query_db(server.db, deactivated) is not None
    assert any(e.target_id == body["id"] for e in events(server, "user.deactivate"))
    on = patch(scim, path, {"op": "replace", "value": {"active": True}})  # as Okta sends it
    assert on.json()["active"] is True
    assert query_db(server.db, deactivated) is None
    assert scim.delete(path).status_code == 204
    assert_scim_error(scim.get(path), 404, "not found")
    with pytest.raises(anthropic.NotFoundError):
        client.organization.users.retrieve(body["id"])
    assert any(e.target_id == body["id"] for e in events(server, "user.remove"))
    again = new_user(scim, userName=body["userName"])  # the name is free again
    assert again["id"] != body["id"]


def test_put_replaces_and_etags_guard_changes(scim: httpx.Client, client: anthropic.Anthropic) -> None:
    body = new_user(scim)
    path = f"/Users/{body['id']}"
    etag = body["meta"]["version"]
    assert scim.get(path, headers={"if-none-match": etag}).status_code == 304
    stale = patch(scim, path, {"op": "replace", "path": "displayName", "value": "X"}, **{"if-match": 'W/"999"'})
    assert_scim_error(stale, 412, "version")
    renamed = f"{unique('r')}@acme.test"
    put = scim.put(
        path, json={"schemas": [USER], "userName": renamed, "displayName": "Grace H"}, headers={"if-match": etag}
    )
    assert put.status_code == 200, put.text
    assert put.json()["meta"]["version"] != etag
    assert "name" not in put.json()
    member = client.organization.users.retrieve(body["id"])
    assert (member.email, member.name) == (renamed, "Grace H")
    bad = patch(scim, path, {"op": "replace", "path": "nonsense", "value": 1})
    assert_scim_error(bad, 400, "nonsense")
    assert_scim_error(scim.post("/Users", content=b"{not json"), 400, "not JSON", "invalidSyntax")
    assert_scim_error(scim.post("/Users", json={"schemas": [USER]}), 400, "userName")


def test_unknown_paths_and_methods_answer_scim_errors(scim: httpx.Client) -> None:
    assert_scim_error(scim.get("/Nope"), 404, "no such endpoint")
    assert_scim_error(scim.get("/Users/user_nope"), 404, "not found")
    assert_scim_error(scim.delete("/Users"), 405, "not allowed")
    assert_scim_error(scim.post("/.search", json={}), 501, "several resource types")


def test_groups_grant_roles_and_leaving_gives_the_direct_role_back(
    server: Server, scim: httpx.Client, client: anthropic.Anthropic
) -> None:
    ada, bob = new_user(scim), new_user(scim)
    name = unique("Engineering")
    created = scim.post("/Groups", json={"schemas": [GROUP], "displayName": name, "members": [{"value": ada["id"]}]})
    assert created.status_code == 201, created.text
    group = created.json()
    assert [m["value"] for m in group["members"]] == [ada["id"]]
    assert scim.get("/Groups", params={"filter": f'displayName eq "{name.upper()}"'}).json()["totalResults"] == 1

    ws_id = client.organization.workspaces.create(name=unique("ws")).id
    mapped = cli(server.db, "groups", "set-roles", group["id"], "--org-role", "developer",
                 "--workspace-role", f"{ws_id}=workspace_developer", "--json")  # fmt: skip
    assert set(json.loads(mapped.stdout)["role_ids"]) == {
        "rbacrole_developer",
        f"rbacrole_workspace_developer__{ws_id}",
    }
    assert client.organization.users.retrieve(ada["id"]).role == "developer"
    members = client.organization.workspaces.members.list(ws_id).data
    assert {(m.user_id, m.workspace_role) for m in members} >= {(ada["id"], "workspace_developer")}

    added = patch(scim, f"/Groups/{group['id']}", {"op": "add", "path": "members", "value": [{"value": bob["id"]}]})
    assert {m["value"] for m in added.json()["members"]} == {ada["id"], bob["id"]}
    assert client.organization.users.retrieve(bob["id"]).role == "developer"
    assert scim.get(f"/Users/{bob['id']}").json()["groups"][0]["value"] == group["id"]

    client.organization.users.update(bob["id"], role="billing")  # a direct change while in the group
    removed = patch(scim, f"/Groups/{group['id']}", {"op": "remove", "path": f'members[value eq "{bob["id"]}"]'})
    assert [m["value"] for m in removed.json()["members"]] == [ada["id"]]
    assert client.organization.users.retrieve(bob["id"]).role == "billing"  # the direct change stands

    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert client.organization.users.retrieve(ada["id"]).role == "user"
    assert ada["id"] not in {m.user_id for m in client.organization.workspaces.members.list(ws_id).data}
    nested = scim.post("/Groups", json={"schemas": [GROUP], "displayName": unique("g"), "members": [{"value": "x"}]})
    assert_scim_error(nested, 400, "no user", "invalidValue")


def test_rbac_groups_and_roles_on_the_admin_api(
    server: Server, scim: httpx.Client, client: anthropic.Anthropic
) -> None:
    groups = client.beta.organization.rbac_groups
    made = groups.create(name=unique("Finance"))
    assert (made.type, made.source_type, made.role_ids) == ("rbac_group", "direct", [])
    assert groups.retrieve(made.id).name == made.name
    assert groups.update(made.id, name="Finance EU").name == "Finance EU"
    ada = new_user(scim)
    member = groups.members.add(made.id, user_id=ada["id"])
    assert (member.email, member.rbac_group_id) == (ada["userName"], made.id)
    assert [m.user_id for m in groups.members.list(made.id)] == [ada["id"]]
    cli(server.db, "groups", "set-roles", made.id, "--org-role", "billing")
    assert groups.retrieve(made.id).role_ids == ["rbacrole_billing"]
    assert client.organization.users.retrieve(ada["id"]).role == "billing"
    gone = groups.members.remove(ada["id"], rbac_group_id=made.id)
    assert gone.type == "rbac_group_member_deleted"
    assert client.organization.users.retrieve(ada["id"]).role == "user"
    assert made.id in {g.id for g in groups.list(limit=1000)}
    roles = {r.id: r for r in client.beta.organization.rbac_roles.list(limit=1000)}
    assert roles["rbacrole_developer"].source.type == "built_in"
    assert client.beta.organization.rbac_roles.retrieve("rbacrole_billing").display_name == "Billing"
    assert groups.delete(made.id).type == "rbac_group_deleted"
    with pytest.raises(anthropic.NotFoundError) as missing:
        groups.retrieve(made.id)
    assert "rbac_group_not_found" in str(missing.value.body)

    scim_group = scim.post("/Groups", json={"schemas": [GROUP], "displayName": unique("Idp")}).json()
    assert groups.retrieve(scim_group["id"]).source_type == "scim"
    with pytest.raises(anthropic.BadRequestError, match="identity provider"):
        groups.update(scim_group["id"], name="renamed")


def test_an_invite_with_rbac_groups_adds_the_user_to_them_on_acceptance(
    server: Server, client: anthropic.Anthropic
) -> None:
    group = client.beta.organization.rbac_groups.create(name=unique("Support"))
    cli(server.db, "groups", "set-roles", group.id, "--org-role", "claude_code_user")
    email = f"{unique('inv')}@acme.test"
    with server.http() as http:
        created = http.post(
            "/v1/organizations/invites", json={"email": email, "role": "user", "rbac_group_ids": [group.id]}
        )
        assert created.status_code == 200, created.text
        assert created.json()["rbac_group_ids"] == [group.id]
        listed = http.get("/v1/organizations/invites", params={"email": email}).json()["data"]
        assert listed[0]["rbac_group_ids"] == [group.id]
        token = created.json()["accept_url"].split("#token=")[1]
        accepted = http.post("/v1/invites/accept", json={"token": token, "name": "Invited"})
        assert accepted.status_code == 200, accepted.text
    user_id = accepted.json()["id"]
    assert client.organization.users.retrieve(user_id).role == "claude_code_user"
    assert [m.user_id for m in client.beta.organization.rbac_groups.members.list(group.id)] == [user_id]


def test_bad_input_is_refused_with_scim_errors_never_a_500(scim: httpx.Client) -> None:
    assert_scim_error(scim.post("/Users", json={"schemas": [USER], "userName": "a\x00b"}), 400, "NUL", "invalidValue")
    assert_scim_error(scim.get("/Users", params={"filter": 'userName eq "a\x00"'}), 400, "NUL")
    assert_scim_error(scim.post("/Users", json={"schemas": [USER], "userName": "  "}), 400, "userName")
    assert_scim_error(scim.post("/Users", json={"schemas": [USER], "userName": "x" * 321}), 400, "320")
    assert_scim_error(scim.post("/Users", json=["not", "an", "object"]), 400, "")
    big = {"schemas": [USER], "userName": f"{unique('big')}@acme.test", "title": "x" * (70 * 1024)}
    assert_scim_error(scim.post("/Users", json=big), 413, "65536 bytes")
    assert_scim_error(scim.post("/Users", content=b"{" + b" " * (1024 * 1024 + 1)), 413, "request body")
    assert_scim_error(scim.post("/Groups", json={"schemas": [GROUP], "displayName": ""}), 400, "displayName")


def test_the_groups_cli_lists_groups_and_refuses_roles_a_group_cannot_grant(
    server: Server, client: anthropic.Anthropic
) -> None:
    group = json.loads(cli(server.db, "groups", "create", unique("Ops"), "--json").stdout)
    assert group["source_type"] == "direct"
    listed = json.loads(cli(server.db, "groups", "list", "--json").stdout)
    assert group["id"] in {g["id"] for g in listed}
    admin = cli(server.db, "groups", "set-roles", group["id"], "--org-role", "admin", check=False)
    assert admin.returncode == 1
    assert "never admin" in admin.stderr
    malformed = cli(server.db, "groups", "set-roles", group["id"], "--workspace-role", "nope", check=False)
    assert "WORKSPACE_ID=ROLE" in malformed.stderr
    unknown = cli(
        server.db, "groups", "set-roles", group["id"], "--workspace-role", "wrkspc_x=workspace_user", check=False
    )
    assert "workspace 'wrkspc_x' not found" in unknown.stderr
    assert client.beta.organization.rbac_groups.retrieve(group["id"]).role_ids == []


def test_what_microsoft_entra_id_sends_is_understood(scim: httpx.Client) -> None:
    """Entra ID removes members by ``value`` and replaces through filters that match nothing yet."""
    ada, bob = new_user(scim), new_user(scim)
    members = [{"value": ada["id"]}, {"value": bob["id"]}]
    group = scim.post("/Groups", json={"schemas": [GROUP], "displayName": unique("Entra"), "members": members}).json()
    removed = patch(
        scim, f"/Groups/{group['id']}", {"op": "Remove", "path": "members", "value": [{"value": ada["id"]}]}
    )
    assert removed.status_code == 200, removed.text
    assert [m["value"] for m in removed.json()["members"]] == [bob["id"]]
    work = patch(
        scim, f"/Users/{bob['id']}", {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "bob@acme.com"}
    )
    assert work.status_code == 200, work.text
    assert {"value": "bob@acme.com", "type": "work"}.items() <= work.json()["emails"][0].items()
    probe = scim.get("/Users", params={"filter": f'userName eq "{unique("nobody")}@acme.test"'})
    assert probe.json()["totalResults"] == 0  # Entra's "test connection"
