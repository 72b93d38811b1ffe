"""Every Admin API (and CLI) mutation writes one audit event, in the transaction of the change.

Events are read straight from the server's real database. API calls must be attributed to the admin
key, with the response's ``request-id`` and the caller's address; CLI calls to ``cli``; accepting an
invite to the invite's token. A refused mutation writes nothing.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from typing import Any, Protocol

import anthropic
import httpx
import pytest

from orgwarden import ids
from tests.conftest import TLS, Server, assert_error, cli, query_db, unique

EVENT_FIELDS = (
    "id",
    "action",
    "target_type",
    "target_id",
    "actor_type",
    "actor_id",
    "actor_user_id",
    "workspace_id",
    "request_id",
    "source_ip",
    "outcome",
    "details",
)


# --------------------------------------------------------------------------------------------------
# reading the real database


def _read(server: Server, query: Any) -> Any:
    return query_db(server.db, query)


def audit_events(server: Server) -> list[dict[str, Any]]:
    """Every audit event of the organization, oldest first, as plain dicts."""

    async def query(uow: Any) -> list[dict[str, Any]]:
        rows = await uow.audit.all(server.organization["id"])
        return [{name: getattr(row, name) for name in EVENT_FIELDS} for row in rows]

    result: list[dict[str, Any]] = _read(server, query)
    return result


def admin_key_id(server: Server) -> str:
    async def query(uow: Any) -> str:
        key = await uow.admin_keys.by_secret_hash(ids.hash_secret(server.admin_key))
        assert key is not None
        return str(key.id)

    result: str = _read(server, query)
    return result


def events_of_request(server: Server, request_id: str) -> list[dict[str, Any]]:
    return [event for event in audit_events(server) if event["request_id"] == request_id]


class Response(Protocol):
    """An HTTP response from httpx or from the SDK's own (vendored) httpx."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


def the_event(server: Server, response: Response) -> dict[str, Any]:
    """The single event written by the API call that got ``response``."""
    assert response.status_code == 200, response.text
    request_id = response.headers["request-id"]
    found = events_of_request(server, request_id)
    assert len(found) == 1, found
    return found[0]


def assert_api_event(
    server: Server,
    event: dict[str, Any],
    *,
    action: str,
    target_type: str,
    target_id: str,
    workspace_id: str | None = None,
) -> None:
    assert event["action"] == action
    assert event["target_type"] == target_type
    assert event["target_id"] == target_id
    assert event["actor_type"] == "admin_api_key"
    assert event["actor_id"] == admin_key_id(server)
    assert event["actor_user_id"] == server.user["id"]
    assert event["source_ip"] == "127.0.0.1"
    assert event["outcome"] == "success"
    assert event["workspace_id"] == workspace_id
    assert event["id"].startswith("evt_")


def http(server: Server) -> httpx.Client:
    return server.http()


def new_user(server: Server, client: anthropic.Anthropic, role: str = "user") -> str:
    address = f"{unique('aud')}@example.test"
    raw = client.organization.invites.with_raw_response.create(email=address, role=role)  # type: ignore[arg-type]
    token = raw.http_response.json()["accept_url"].split("#token=", 1)[1]
    with http(server) as h:
        response = h.post("/v1/invites/accept", json={"token": token, "name": "Audited Person"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


# --------------------------------------------------------------------------------------------------
# invites


def test_creating_an_invite_is_audited(server: Server, client: anthropic.Anthropic) -> None:
    address = f"{unique('inv')}@example.test"
    raw = client.organization.invites.with_raw_response.create(email=address, role="developer")
    invite = raw.parse()
    event = the_event(server, raw.http_response)
    assert_api_event(server, event, action="invite.create", target_type="invite", target_id=invite.id)
    assert event["request_id"] == raw.http_response.headers["request-id"]
    assert event["details"] == {"email": address, "role": "developer"}
    # the token is never written to the audit trail
    token = raw.http_response.json()["accept_url"].split("#token=", 1)[1]
    assert token not in json.dumps(event["details"])


def test_deleting_an_invite_is_audited_once(server: Server, client: anthropic.Anthropic) -> None:
    invite = client.organization.invites.create(email=f"{unique('del')}@example.test", role="user")
    raw = client.organization.invites.with_raw_response.delete(invite.id)
    event = the_event(server, raw.http_response)
    assert_api_event(server, event, action="invite.delete", target_type="invite", target_id=invite.id)
    assert event["details"]["was"] == "pending"
    # deleting again changes nothing, so it records nothing
    again = client.organization.invites.with_raw_response.delete(invite.id)
    assert again.http_response.status_code == 200
    assert events_of_request(server, again.http_response.headers["request-id"]) == []


def test_accepting_an_invite_is_audited_as_the_invite_token(server: Server, client: anthropic.Anthropic) -> None:
    raw = client.organization.invites.with_raw_response.create(email=f"{unique('acc')}@example.test", role="billing")
    invite = raw.parse()
    token = raw.http_response.json()["accept_url"].split("#token=", 1)[1]
    with httpx.Client(base_url=server.base_url, verify=TLS) as anonymous:
        response = anonymous.post("/v1/invites/accept", json={"token": token, "name": "New Person"})
    user_id = response.json()["id"]
    event = the_event(server, response)
    assert event["action"] == "invite.accept"
    assert (event["target_type"], event["target_id"]) == ("user", user_id)
    assert (event["actor_type"], event["actor_id"], event["actor_user_id"]) == ("invite_token", invite.id, user_id)
    assert event["request_id"] == response.headers["request-id"]
    assert event["source_ip"] == "127.0.0.1"
    assert event["outcome"] == "success"
    assert event["workspace_id"] is None
    assert event["details"] == {"invite_id": invite.id, "role": "billing"}


# --------------------------------------------------------------------------------------------------
# users


def test_changing_a_users_role_is_audited(server: Server, client: anthropic.Anthropic) -> None:
    user_id = new_user(server, client, "user")
    raw = client.organization.users.with_raw_response.update(user_id, role="developer")
    event = the_event(server, raw.http_response)
    assert_api_event(server, event, action="user.update", target_type="user", target_id=user_id)
    assert event["details"] == {"role": ["user", "developer"]}
    # setting the role it already has records nothing
    same = client.organization.users.with_raw_response.update(user_id, role="developer")
    assert events_of_request(server, same.http_response.headers["request-id"]) == []


def test_removing_a_user_is_audited_with_what_it_took_away(server: Server, client: anthropic.Anthropic) -> None:
    user_id = new_user(server, client)
    workspace = client.organization.workspaces.create(name=unique("rmws"))
    client.organization.workspaces.members.add(workspace.id, user_id=user_id, workspace_role="workspace_user")
    raw = client.organization.users.with_raw_response.remove(user_id)
    event = the_event(server, raw.http_response)
    assert_api_event(server, event, action="user.remove", target_type="user", target_id=user_id)
    assert event["details"]["workspaces"] == [workspace.id]
    assert event["details"]["revoked_admin_api_keys"] == []


# --------------------------------------------------------------------------------------------------
# workspaces


def test_creating_a_workspace_is_audited(server: Server, client: anthropic.Anthropic) -> None:
    name = unique("cws")
    raw = client.organization.workspaces.with_raw_response.create(name=name)
    workspace = raw.parse()
    event = the_event(server, raw.http_response)
    assert_api_event(
        server, event, action="workspace.create", target_type="workspace", target_id=workspace.id,
        workspace_id=workspace.id,
    )  # fmt: skip
    assert event["details"] == {"name": name}


def test_updating_a_workspace_is_audited_with_before_and_after(server: Server, client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("uws"), tags={"a": "1"})
    new_name = unique("uws2")
    raw = client.organization.workspaces.with_raw_response.update(workspace.id, name=new_name, tags={"a": None})
    event = the_event(server, raw.http_response)
    assert_api_event(
        server, event, action="workspace.update", target_type="workspace", target_id=workspace.id,
        workspace_id=workspace.id,
    )  # fmt: skip
    assert event["details"] == {
        "before": {"name": workspace.name, "tags": {"a": "1"}},
        "after": {"name": new_name, "tags": {}},
    }
    # an empty update changes nothing and records nothing
    empty = client.organization.workspaces.with_raw_response.update(workspace.id)
    assert events_of_request(server, empty.http_response.headers["request-id"]) == []


def test_archiving_a_workspace_is_audited_once_with_its_archived_keys(
    server: Server, client: anthropic.Anthropic
) -> None:
    workspace = client.organization.workspaces.create(name=unique("aws"))
    with http(server) as h:
        key = h.post("/v1/organizations/api_keys", json={"name": "k", "workspace_id": workspace.id}).json()
    raw = client.organization.workspaces.with_raw_response.archive(workspace.id)
    event = the_event(server, raw.http_response)
    assert_api_event(
        server, event, action="workspace.archive", target_type="workspace", target_id=workspace.id,
        workspace_id=workspace.id,
    )  # fmt: skip
    assert event["details"] == {"archived_api_keys": [key["id"]], "archived_tunnels": []}
    again = client.organization.workspaces.with_raw_response.archive(workspace.id)
    assert again.http_response.status_code == 200
    assert events_of_request(server, again.http_response.headers["request-id"]) == []


# --------------------------------------------------------------------------------------------------
# members


def test_adding_updating_and_removing_a_member_are_audited(server: Server, client: anthropic.Anthropic) -> None:
    workspace = client.organization.workspaces.create(name=unique("mws"))
    user_id = new_user(server, client, "developer")
    members = client.organization.workspaces.members.with_raw_response

    added = members.add(workspace.id, user_id=user_id, workspace_role="workspace_developer")
    event = the_event(server, added.http_response)
    assert_api_event(
        server, event, action="workspace_member.add", target_type="user", target_id=user_id,
        workspace_id=workspace.id,
    )  # fmt: skip
    assert event["details"] == {"workspace_role": "workspace_developer"}

    updated = members.update(user_id, workspace_id=workspace.id, workspace_role="workspace_admin")
    event = the_event(server, updated.http_response)
    assert_api_event(
        server, event, action="workspace_member.update", target_type="user", target_id=user_id,
        workspace_id=workspace.id,
    )  # fmt: skip
    assert event["details"] == {"workspace_role": ["workspace_developer", "workspace_admin"]}

    removed = members.remove(user_id, workspace_id=workspace.id)
    event = the_event(server, removed.http_response)
    assert_api_event(
        server, event, action="workspace_member.remove", target_type="user", target_id=user_id,
        workspace_id=workspace.id,
    )  # fmt: skip
    assert event["details"] == {"workspace_role": "workspace_admin"}


# --------------------------------------------------------------------------------------------------
# API keys


def test_creating_an_api_key_is_audited_without_its_secret(server: Server) -> None:
    workspace_id = server.client().organization.workspaces.create(name=unique("kws")).id
    with http(server) as h:
        response = h.post("/v1/organizations/api_keys", json={"name": "audited key", "workspace_id": workspace_id})
    body = response.json()
    event = the_event(server, response)
    assert_api_event(
        server, event, action="api_key.create", target_type="api_key", target_id=body["id"],
        workspace_id=workspace_id,
    )  # fmt: skip
    assert event["details"] == {"name": "audited key", "expires_at": None}
    assert body["key"] not in json.dumps(event["details"])


def test_an_api_key_in_the_default_workspace_is_audited_with_the_real_workspace_id(
    server: Server, client: anthropic.Anthropic
) -> None:
    with http(server) as h:
        response = h.post("/v1/organizations/api_keys", json={"name": "default key"})
    body = response.json()
    assert body["workspace_id"] is None
    event = the_event(server, response)
    assert event["workspace_id"] == body["scope"]["workspace_id"]
    assert event["workspace_id"] is not None


def test_updating_an_api_key_is_audited(server: Server, client: anthropic.Anthropic) -> None:
    with http(server) as h:
        body = h.post("/v1/organizations/api_keys", json={"name": "before"}).json()
    workspace_id = body["scope"]["workspace_id"]
    raw = client.organization.api_keys.with_raw_response.update(body["id"], name="after", status="inactive")
    event = the_event(server, raw.http_response)
    assert_api_event(
        server, event, action="api_key.update", target_type="api_key", target_id=body["id"],
        workspace_id=workspace_id,
    )  # fmt: skip
    assert event["details"] == {"name": ["before", "after"], "status": ["active", "inactive"]}
    same = client.organization.api_keys.with_raw_response.update(body["id"], name="after")
    assert events_of_request(server, same.http_response.headers["request-id"]) == []


# --------------------------------------------------------------------------------------------------
# the CLI


def _cli_events(server: Server, action: str, target_id: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(server) if e["action"] == action and e["target_id"] == target_id]


def assert_cli_event(server: Server, event: dict[str, Any]) -> None:
    assert event["actor_type"] == "cli"
    assert event["actor_id"] == cli_actor()
    assert event["actor_user_id"] == server.user["id"]  # the CLI acts for the first admin
    assert event["request_id"] is None
    assert event["source_ip"] == "cli"
    assert event["outcome"] == "success"


def test_creating_an_api_key_with_the_cli_is_audited(server: Server) -> None:
    workspace = json.loads(cli(server.db, "workspaces", "create", unique("cliws"), "--json").stdout)
    created = json.loads(
        cli(server.db, "keys", "create", "--name", "cli key", "--workspace", workspace["id"], "--json").stdout
    )
    [event] = _cli_events(server, "api_key.create", created["id"])
    assert_cli_event(server, event)
    assert (event["target_type"], event["workspace_id"]) == ("api_key", workspace["id"])
    assert event["details"]["name"] == "cli key"


def test_creating_a_workspace_with_the_cli_is_audited(server: Server) -> None:
    name = unique("cliws")
    workspace = json.loads(cli(server.db, "workspaces", "create", name, "--json").stdout)
    [event] = _cli_events(server, "workspace.create", workspace["id"])
    assert_cli_event(server, event)
    assert (event["target_type"], event["workspace_id"]) == ("workspace", workspace["id"])
    assert event["details"] == {"name": name}


def test_creating_and_revoking_an_admin_key_with_the_cli_are_audited(server: Server) -> None:
    created = json.loads(cli(server.db, "admin-keys", "create", "--name", "second admin key", "--json").stdout)
    assert created["key"].startswith("sk-ant-admin01-")
    [event] = _cli_events(server, "admin_api_key.create", created["id"])
    assert_cli_event(server, event)
    assert event["target_type"] == "admin_api_key"
    assert event["workspace_id"] is None
    assert event["details"] == {"name": "second admin key", "user_id": server.user["id"]}
    assert created["key"] not in json.dumps(event["details"])

    cli(server.db, "admin-keys", "revoke", created["id"])
    [revoked] = _cli_events(server, "admin_api_key.revoke", created["id"])
    assert_cli_event(server, revoked)
    assert revoked["target_type"] == "admin_api_key"
    # revoking again changes nothing and records nothing
    cli(server.db, "admin-keys", "revoke", created["id"])
    assert len(_cli_events(server, "admin_api_key.revoke", created["id"])) == 1
    # and the revoked key stops working on the API at once
    with server.http(created["key"]) as h:
        assert h.get("/v1/organizations/me").status_code == 401


# --------------------------------------------------------------------------------------------------
# refusals write nothing


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/organizations/workspaces", {"name": "x", "tags": {"anthropic_x": "1"}}, 400),
        ("POST", "/v1/organizations/workspaces", {"name": " "}, 400),
        ("POST", "/v1/organizations/invites", {"email": "someone@example.test", "role": "admin"}, 400),
        ("POST", "/v1/organizations/invites", {"email": "root@acme.test", "role": "user"}, 400),
        ("POST", "/v1/organizations/api_keys", {"name": "k", "workspace_id": "wrkspc_" + "0" * 24}, 404),
        ("POST", "/v1/organizations/users/user_" + "0" * 24, {"role": "developer"}, 404),
        ("DELETE", "/v1/organizations/invites/invite_" + "0" * 24, None, 404),
    ],
)
def test_a_refused_mutation_writes_no_event(
    server: Server, method: str, path: str, body: dict[str, Any] | None, status: int
) -> None:
    before = audit_events(server)
    with http(server) as h:
        response = h.request(method, path, json=body) if body is not None else h.request(method, path)
    assert response.status_code == status, response.text
    assert events_of_request(server, response.headers["request-id"]) == []
    assert audit_events(server) == before


def test_a_conflict_found_inside_the_transaction_leaves_nothing_half_written(
    server: Server, client: anthropic.Anthropic
) -> None:
    name = unique("dup")
    client.organization.workspaces.create(name=name)
    before = audit_events(server)
    with http(server) as h:
        response = h.post("/v1/organizations/workspaces", json={"name": name.upper()})
    assert_error(response, 409, "conflict_error", name)
    assert audit_events(server) == before
    assert [w.name for w in client.organization.workspaces.list(limit=1000) if w.name.lower() == name] == [name]


def test_refusing_to_archive_the_default_workspace_writes_no_event(server: Server, client: anthropic.Anthropic) -> None:
    default = next(
        w for w in client.organization.workspaces.list(include_default=True, limit=1000) if w.name == "Default"
    )
    before = audit_events(server)
    with http(server) as h:
        response = h.post(f"/v1/organizations/workspaces/{default.id}/archive")
    assert_error(response, 400, "invalid_request_error", "default workspace")
    assert audit_events(server) == before
    assert client.organization.workspaces.retrieve(default.id).archived_at is None


def test_a_failed_cli_command_writes_no_event(server: Server) -> None:
    before = audit_events(server)
    result = cli(server.db, "workspaces", "archive", "wrkspc_" + "0" * 24, check=False)
    assert result.returncode == 1
    assert "not found" in result.stderr
    assert audit_events(server) == before


def test_reads_write_no_events(server: Server, client: anthropic.Anthropic) -> None:
    before = audit_events(server)
    client.organization.retrieve()
    client.organization.workspaces.list()
    client.organization.users.list()
    client.organization.invites.list()
    client.organization.api_keys.list()
    assert audit_events(server) == before


def test_every_event_of_an_api_call_carries_its_request_id(server: Server, client: anthropic.Anthropic) -> None:
    """Across everything this module did, API events all have a request id, and no two events share one
    (each mutation writes exactly one event); CLI events have none."""
    client.organization.workspaces.create(name=unique("last"))
    events = audit_events(server)
    api = [e for e in events if e["actor_type"] in ("admin_api_key", "invite_token")]
    assert api, "this module made API mutations"
    assert all(e["request_id"] and e["request_id"].startswith("req_") for e in api)
    request_ids = [e["request_id"] for e in api]
    multi = {r for r in request_ids if request_ids.count(r) > 1}
    assert not multi, [e for e in api if e["request_id"] in multi]
    assert all(e["request_id"] is None for e in events if e["actor_type"] in ("cli", "system"))
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
