"""Every validation rule and refusal of the Admin API: status, ``error.type`` and a message naming the
problem, over raw HTTP and, for a few, through the official SDK (exception class and ``error_code``).

Tests in this module share one organization per backend, so each makes its own workspaces, users,
invites and keys (with unique names) and asserts nothing about what other tests leave behind. A
server log with a traceback (a 500) fails the module at teardown (``conftest.stop_server``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import create_async_engine

from orgwarden.config import load_settings
from orgwarden.storage.tables import ApiKey, Invite
from tests.conftest import TLS, Database, Server, assert_error, cli, start_server, stop_server, unique

WORKSPACES = "/v1/organizations/workspaces"
INVITES = "/v1/organizations/invites"
USERS = "/v1/organizations/users"
API_KEYS = "/v1/organizations/api_keys"
ACCEPT = "/v1/invites/accept"
UNKNOWN_WORKSPACE = "wrkspc_01000000000000000000000000"
UNKNOWN_USER = "user_01000000000000000000000000"
PAST = datetime(2020, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# helpers (real HTTP against the real server; SQL only to move a row's clock into the past)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(scope="module")
def default_workspace_id(http: httpx.Client) -> str:
    key = ok(http.post(API_KEYS, json={"name": unique("probe")}))
    return str(key["scope"]["workspace_id"])


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def set_in_database(db: Database, table: Table, row_id: str, **values: Any) -> None:
    """Change one row directly in the server's database (the server is another process)."""
    settings = load_settings(**db.settings_kwargs)

    async def run() -> None:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(update(table).where(table.c.id == row_id).values(**values))
                assert result.rowcount == 1
        finally:
            await engine.dispose()

    asyncio.run(run())


def token_of(invite: dict[str, Any]) -> str:
    return str(invite["accept_url"].split("#token=", 1)[1])


def new_invite(http: httpx.Client, role: str = "developer") -> dict[str, Any]:
    return ok(http.post(INVITES, json={"email": f"{unique('inv')}@example.com", "role": role}))


def new_user(http: httpx.Client, role: str = "developer") -> dict[str, Any]:
    invite = new_invite(http, role)
    return ok(http.post(ACCEPT, json={"token": token_of(invite), "name": unique("name")}))


def new_workspace(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    return ok(http.post(WORKSPACES, json={"name": unique("ws"), **fields}))


def archived_workspace(http: httpx.Client) -> dict[str, Any]:
    workspace = new_workspace(http)
    return ok(http.post(f"{WORKSPACES}/{workspace['id']}/archive"))


def root_user_id(http: httpx.Client) -> str:
    users = ok(http.get(USERS, params={"email": "root@acme.test"}))["data"]
    assert len(users) == 1
    return str(users[0]["id"])


def error_code(response: httpx.Response) -> str | None:
    details = response.json()["error"].get("details") or {}
    return details.get("error_code")


def post_raw(http: httpx.Client, path: str, content: bytes | Iterator[bytes]) -> httpx.Response:
    return http.post(path, content=content, headers={"content-type": "application/json"})


# --------------------------------------------------------------------------------------------------
# authentication


def test_a_request_without_credentials_is_refused_with_401(server: Server) -> None:
    response = httpx.get(
        f"{server.base_url}/v1/organizations/me", headers={"anthropic-version": "2023-06-01"}, verify=TLS
    )
    assert_error(response, 401, "authentication_error", "missing credentials")


def test_an_authorization_header_that_is_not_bearer_counts_as_no_credentials(server: Server) -> None:
    response = httpx.get(
        f"{server.base_url}/v1/organizations/me", headers={"authorization": f"Basic {server.admin_key}"}, verify=TLS
    )
    assert_error(response, 401, "authentication_error", "missing credentials")


@pytest.mark.parametrize(
    "key",
    ["sk-ant-admin01-" + "x" * 93 + "AA", "sk-ant-api03-" + "y" * 93 + "AA", "not-a-key-at-all"],
    ids=["unknown-admin-key", "unknown-api-key", "garbage"],
)
def test_an_unknown_key_is_refused_with_401(server: Server, key: str) -> None:
    with server.http(key) as http:
        assert_error(http.get("/v1/organizations/me"), 401, "authentication_error", "invalid x-api-key")


def test_credentials_are_checked_before_the_body_is_read(server: Server) -> None:
    with server.http("sk-ant-admin01-nope") as http:
        response = post_raw(http, WORKSPACES, b"{not json")
    assert_error(response, 401, "authentication_error", "invalid x-api-key")


def test_a_revoked_admin_key_is_refused_with_401(server: Server) -> None:
    created = json.loads(cli(server.db, "admin-keys", "create", "--name", unique("revokee"), "--json").stdout)
    assert created["key"].startswith("sk-ant-admin01-")
    with server.http(created["key"]) as http:
        assert http.get("/v1/organizations/me").status_code == 200
        cli(server.db, "admin-keys", "revoke", created["id"])
        assert_error(http.get("/v1/organizations/me"), 401, "authentication_error", "revoked")
        assert_error(http.post(WORKSPACES, json={"name": unique()}), 401, "authentication_error", "revoked")


def test_a_regular_api_key_is_refused_on_the_admin_api_with_403(server: Server, http: httpx.Client) -> None:
    secret = ok(http.post(API_KEYS, json={"name": unique("data-plane")}))["key"]
    with server.http(secret) as as_api_key:
        assert_error(as_api_key.get("/v1/organizations/me"), 403, "permission_error", "admin API key")
        assert_error(as_api_key.get(USERS), 403, "permission_error", "cannot use the admin api")
    bearer = httpx.get(
        f"{server.base_url}/v1/organizations/me", headers={"authorization": f"Bearer {secret}"}, timeout=30, verify=TLS
    )
    assert_error(bearer, 403, "permission_error", "admin API key")


def test_the_admin_key_is_accepted_in_x_api_key_and_as_a_bearer_token(server: Server) -> None:
    url = f"{server.base_url}/v1/organizations/me"
    by_header = httpx.get(url, headers={"x-api-key": server.admin_key}, timeout=30, verify=TLS)
    by_bearer = httpx.get(url, headers={"authorization": f"Bearer {server.admin_key}"}, timeout=30, verify=TLS)
    assert by_header.status_code == by_bearer.status_code == 200
    assert by_header.json()["id"] == by_bearer.json()["id"] == server.organization["id"]


def test_the_sdk_raises_authentication_error_for_an_unknown_key(server: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        server.client("sk-ant-admin01-" + "z" * 93 + "AA").organization.retrieve()
    assert caught.value.status_code == 401
    assert "invalid x-api-key" in caught.value.message


def test_the_sdk_raises_permission_denied_for_a_regular_api_key(server: Server, http: httpx.Client) -> None:
    secret = ok(http.post(API_KEYS, json={"name": unique("sdk-data-plane")}))["key"]
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        server.client(secret).organization.users.list()
    assert caught.value.status_code == 403


# --------------------------------------------------------------------------------------------------
# request bodies, query strings, routing


def test_malformed_json_is_refused_naming_json(http: httpx.Client) -> None:
    assert_error(post_raw(http, WORKSPACES, b'{"name": '), 400, "invalid_request_error", "not valid JSON")


def test_a_body_that_is_not_utf8_is_refused_as_invalid_json(http: httpx.Client) -> None:
    assert_error(post_raw(http, WORKSPACES, b'{"name": "\xff"}'), 400, "invalid_request_error", "not valid JSON")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (WORKSPACES, {"name": 1}, "name"),
        (WORKSPACES, {"name": "x", "tags": {"team": 5}}, "tags.team"),
        (WORKSPACES, {"name": "x", "tags": ["a"]}, "tags"),
        (WORKSPACES, {"name": "x", "data_residency": {"default_inference_geo": 3}}, "default_inference_geo"),
        (INVITES, {"email": ["a@b.co"], "role": "user"}, "email"),
        (API_KEYS, {"name": True}, "name"),
        (API_KEYS, {"name": "x", "expires_at": 5}, "expires_at"),
        (API_KEYS, {"name": "x", "workspace_id": 7}, "workspace_id"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_the_field(
    http: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    assert_error(http.post(path, json=body), 400, "invalid_request_error", f"{field}:")


def test_a_string_is_not_coerced_to_a_number_or_a_number_to_a_string(http: httpx.Client) -> None:
    response = http.post(INVITES, json={"email": f"{unique()}@example.com", "role": 1})
    assert_error(response, 400, "invalid_request_error", "role: input should be a valid string")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (WORKSPACES, {"name": "x", "colour": "#000000"}, "colour"),
        (WORKSPACES, {"name": "x", "data_residency": {"geo": "us"}}, "data_residency.geo"),
        (INVITES, {"email": "a@example.com", "role": "user", "team": "x"}, "team"),
        (API_KEYS, {"name": "x", "scope": {}}, "scope"),
        (ACCEPT, {"token": "t", "name": "n", "email": "a@b.co"}, "email"),
    ],
)
def test_an_unknown_field_is_refused_naming_it(http: httpx.Client, path: str, body: dict[str, Any], field: str) -> None:
    assert_error(http.post(path, json=body), 400, "invalid_request_error", f"{field}: unknown field")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (WORKSPACES, {"tags": {}}, "name"),
        (INVITES, {"role": "user"}, "email"),
        (INVITES, {"email": "someone@example.com"}, "role"),
        (API_KEYS, {"workspace_id": None}, "name"),
        (ACCEPT, {"token": "t"}, "name"),
        (USERS + "/" + UNKNOWN_USER, {}, "role"),
        (WORKSPACES + "/" + UNKNOWN_WORKSPACE + "/members", {"user_id": "user_x"}, "workspace_role"),
    ],
)
def test_a_missing_required_field_is_refused_naming_it(
    http: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = http.post(path, json=body)
    assert_error(response, 400, "invalid_request_error", field)
    assert response.json()["error"]["message"] == f"{field}: field required"


@pytest.mark.parametrize("content", [b"", b"   \n"], ids=["empty", "whitespace"])
def test_an_empty_body_is_refused_where_one_is_required(http: httpx.Client, content: bytes) -> None:
    assert_error(post_raw(http, WORKSPACES, content), 400, "invalid_request_error", "request body is required")
    assert_error(post_raw(http, API_KEYS, content), 400, "invalid_request_error", "request body is required")


@pytest.mark.parametrize("content", [b"[1, 2]", b'"name"', b"null", b"3", b"true"])
def test_a_body_that_is_not_a_json_object_is_refused(http: httpx.Client, content: bytes) -> None:
    assert_error(post_raw(http, WORKSPACES, content), 400, "invalid_request_error", "must be a JSON object")


def test_a_body_over_the_limit_is_refused_with_413(http: httpx.Client) -> None:
    limit = 1_048_576
    body = json.dumps({"name": unique()}).encode()
    too_big = body[:-1] + b" " * (limit - len(body) + 1) + b"}"
    assert len(too_big) == limit + 1
    response = post_raw(http, WORKSPACES, too_big)
    assert_error(response, 413, "request_too_large", "larger than the limit of 1048576 bytes")


def test_a_body_of_exactly_the_limit_is_accepted(http: httpx.Client) -> None:
    limit = 1_048_576
    body = json.dumps({"name": unique("at-limit")}).encode()
    exact = body[:-1] + b" " * (limit - len(body)) + b"}"
    assert len(exact) == limit
    assert post_raw(http, WORKSPACES, exact).status_code == 200


def test_a_chunked_body_without_content_length_over_the_limit_is_refused_with_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "' + unique().encode() + b'"'
        for _ in range(17):  # 17 x 64 KiB > 1 MiB
            yield b" " * 65_536
        yield b"}"

    response = post_raw(http, WORKSPACES, chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large", "larger than the limit")


def test_a_small_chunked_body_is_accepted(http: httpx.Client) -> None:
    name = unique("chunked")

    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield json.dumps(name).encode() + b"}"

    assert ok(post_raw(http, WORKSPACES, chunks()))["name"] == name


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (WORKSPACES, {"name": "a\u0000b"}, "name"),
        (WORKSPACES, {"name": "x", "tags": {"k\u0000": "v"}}, "tags"),
        (WORKSPACES, {"name": "x", "tags": {"k": "\u0000"}}, "tags"),
        (INVITES, {"email": "a\u0000@example.com", "role": "user"}, "email"),
        (API_KEYS, {"name": "\u0000"}, "name"),
        (ACCEPT, {"token": "t", "name": "Nul\u0000"}, "name"),
    ],
)
def test_a_nul_character_in_a_body_string_is_refused_on_every_backend(
    http: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    # PostgreSQL cannot store NUL in text: before this rule it answered 500 there and 200 on SQLite.
    assert_error(http.post(path, json=body), 400, "invalid_request_error", f"{field}: must not contain NUL")


def test_a_literal_backslash_u0000_is_ordinary_text(http: httpx.Client) -> None:
    name = unique("slash") + "\\u0000"
    assert ok(http.post(WORKSPACES, json={"name": name}))["name"] == name


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"{USERS}?email=a%00@example.com", "email"),
        (f"{WORKSPACES}?after_id=wrkspc_%00", "after_id"),
        (f"{USERS}/user_%00", None),
        (f"{WORKSPACES}/wrkspc_%00/members", None),
    ],
)
def test_a_nul_character_in_the_path_or_query_is_refused(http: httpx.Client, path: str, field: str | None) -> None:
    """In the query the route names the field; in the path the server refuses it first, as it does
    any control character in a decoded path (it would break the request line of a forwarded call)."""
    message = f"{field}: must not contain NUL" if field else "the request path contains a control character"
    assert_error(http.get(path), 400, "invalid_request_error", message)


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (WORKSPACES, {"limit": "0"}, "limit: must be between 1 and 1000, got 0"),
        (WORKSPACES, {"limit": "1001"}, "limit: must be between 1 and 1000, got 1001"),
        (USERS, {"limit": "-5"}, "limit: must be between 1 and 1000"),
        (INVITES, {"limit": "abc"}, "limit: 'abc' is not an integer"),
        (API_KEYS, {"limit": "1.5"}, "limit: '1.5' is not an integer"),
        (USERS, {"after_id": "user_a", "before_id": "user_b"}, "after_id and before_id cannot both be given"),
        (WORKSPACES, {"include_archived": "maybe"}, "include_archived: 'maybe' is not a boolean"),
        (WORKSPACES, {"include_default": "2"}, "include_default: '2' is not a boolean"),
        (WORKSPACES, [("limit", "1"), ("limit", "2")], "limit: given 2 times"),
        (USERS, {"roles[]": "owner"}, "roles: 'owner' is not one of"),
        (USERS, {"email": "not-an-email"}, "email: 'not-an-email' is not a valid email address"),
        (INVITES, {"statuses[]": "lost"}, "statuses: 'lost' is not one of"),
        (INVITES, {"roles": ""}, "roles: empty value"),
        (API_KEYS, {"status": "bogus"}, "status: 'bogus' is not one of"),
        (WORKSPACES, [("ids[]", f"wrkspc_{i}") for i in range(101)], "ids: at most 100"),
    ],
)
def test_a_bad_query_value_is_refused_naming_the_parameter(
    http: httpx.Client, path: str, params: Any, message: str
) -> None:
    assert_error(http.get(path, params=params), 400, "invalid_request_error", message)


def test_the_limit_bounds_themselves_are_accepted(http: httpx.Client) -> None:
    assert ok(http.get(WORKSPACES, params={"limit": "1"}))["has_more"] in (True, False)
    assert isinstance(ok(http.get(WORKSPACES, params={"limit": "1000"}))["data"], list)


@pytest.mark.parametrize(
    "path", ["/v1/nope", "/v1/organizations/me/extra", "/v1/organizations/workspaces/w/members/u/x", "/"]
)
def test_an_unknown_endpoint_is_404_naming_the_path(http: httpx.Client, path: str) -> None:
    assert_error(http.get(path), 404, "not_found_error", f"no such endpoint: GET {path}")


def test_an_unknown_endpoint_is_404_even_without_credentials(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/v1/organizations/teams", json={}, verify=TLS)
    assert_error(response, 404, "not_found_error", "/v1/organizations/teams")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", WORKSPACES),
        ("PUT", "/v1/organizations/me"),
        ("PATCH", USERS + "/" + UNKNOWN_USER),
        ("DELETE", API_KEYS + "/apikey_01000000000000000000000000"),
        ("GET", ACCEPT),
        ("GET", WORKSPACES + "/" + UNKNOWN_WORKSPACE + "/archive"),
    ],
)
def test_a_wrong_method_is_405_naming_method_and_path(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    assert_error(response, 405, "invalid_request_error", f"method {method} is not allowed on {path}")


# --------------------------------------------------------------------------------------------------
# invites


def test_an_invite_with_role_admin_is_refused(http: httpx.Client) -> None:
    response = http.post(INVITES, json={"email": f"{unique()}@example.com", "role": "admin"})
    assert_error(response, 400, "invalid_request_error", "role: cannot be 'admin'")


def test_the_sdk_raises_bad_request_for_an_admin_invite(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.organization.invites.create(email=f"{unique()}@example.com", role="admin")  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert "cannot be 'admin'" in caught.value.message


@pytest.mark.parametrize("role", ["owner", "ADMIN", "workspace_admin", ""])
def test_an_invite_with_an_unknown_role_is_refused(http: httpx.Client, role: str) -> None:
    response = http.post(INVITES, json={"email": f"{unique()}@example.com", "role": role})
    assert_error(response, 400, "invalid_request_error", f"role: {role!r} is not one of")


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two words@example.com", "@example.com", "", "a@@b.co"])
def test_an_invite_with_a_bad_email_is_refused(http: httpx.Client, email: str) -> None:
    response = http.post(INVITES, json={"email": email, "role": "user"})
    assert_error(response, 400, "invalid_request_error", "is not a valid email address")


def test_an_invite_with_an_unknown_rbac_group_is_refused(http: httpx.Client) -> None:
    body = {"email": f"{unique()}@example.com", "role": "user", "rbac_group_ids": ["rbac_1"]}
    refused = assert_error(http.post(INVITES, json=body), 404, "not_found_error", "RBAC group 'rbac_1' not found")
    assert refused["error"]["details"] == {"error_code": "rbac_group_not_found"}
    body["rbac_group_ids"] = []
    assert ok(http.post(INVITES, json=body))["rbac_group_ids"] == []


@pytest.mark.parametrize("email", ["root@acme.test", "  ROOT@Acme.Test "])
def test_inviting_an_existing_member_is_refused_as_already_member(http: httpx.Client, email: str) -> None:
    response = http.post(INVITES, json={"email": email, "role": "user"})
    assert_error(response, 400, "invalid_request_error", "root@acme.test is already a member")
    assert error_code(response) == "already_member"


def test_the_sdk_exposes_already_member_as_the_error_code(client: anthropic.Anthropic, http: httpx.Client) -> None:
    member = new_user(http)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.organization.invites.create(email=member["email"], role="billing")
    assert caught.value.error_code == "already_member"


def test_a_second_pending_invite_for_the_same_email_is_refused(http: httpx.Client) -> None:
    email = f"{unique()}@example.com"
    first = ok(http.post(INVITES, json={"email": email, "role": "user"}))
    response = http.post(INVITES, json={"email": email.upper(), "role": "developer"})
    assert_error(response, 400, "invalid_request_error", f"pending invite for {email} already exists")
    assert first["id"] in response.json()["error"]["message"]
    assert error_code(response) == "invite_already_exists"


def test_the_sdk_exposes_invite_already_exists_as_the_error_code(client: anthropic.Anthropic) -> None:
    email = f"{unique()}@example.com"
    client.organization.invites.create(email=email, role="user")
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.organization.invites.create(email=email, role="user")
    assert caught.value.error_code == "invite_already_exists"


def test_a_deleted_invite_frees_the_email_for_a_new_one(http: httpx.Client) -> None:
    invite = new_invite(http)
    ok(http.delete(f"{INVITES}/{invite['id']}"))
    assert ok(http.post(INVITES, json={"email": invite["email"], "role": "user"}))["status"] == "pending"


def test_deleting_an_accepted_invite_is_a_conflict(http: httpx.Client) -> None:
    invite = new_invite(http)
    ok(http.post(ACCEPT, json={"token": token_of(invite), "name": "Ada"}))
    response = http.delete(f"{INVITES}/{invite['id']}")
    assert_error(response, 409, "conflict_error", "was accepted and cannot be deleted")
    assert ok(http.get(f"{INVITES}/{invite['id']}"))["status"] == "accepted"


def test_the_sdk_raises_conflict_for_deleting_an_accepted_invite(
    client: anthropic.Anthropic, http: httpx.Client
) -> None:
    invite = new_invite(http)
    ok(http.post(ACCEPT, json={"token": token_of(invite), "name": "Grace"}))
    with pytest.raises(anthropic.ConflictError) as caught:
        client.organization.invites.delete(invite["id"])
    assert caught.value.status_code == 409


def test_an_unknown_invite_id_is_404(http: httpx.Client) -> None:
    missing = "invite_01000000000000000000000000"
    assert_error(http.get(f"{INVITES}/{missing}"), 404, "not_found_error", f"invite {missing!r} not found")
    assert_error(http.delete(f"{INVITES}/{missing}"), 404, "not_found_error", "not found")


def test_accepting_with_an_unknown_token_is_404(http: httpx.Client) -> None:
    response = http.post(ACCEPT, json={"token": "no-such-token", "name": "Nobody"})
    assert_error(response, 404, "not_found_error", "invite token not recognised")


def test_accepting_needs_no_admin_key_but_a_valid_body(server: Server) -> None:
    response = httpx.post(f"{server.base_url}{ACCEPT}", json={"token": "x"}, timeout=30, verify=TLS)
    assert_error(response, 400, "invalid_request_error", "name: field required")


def test_accepting_with_an_empty_name_is_refused(http: httpx.Client) -> None:
    invite = new_invite(http)
    response = http.post(ACCEPT, json={"token": token_of(invite), "name": "  "})
    assert_error(response, 400, "invalid_request_error", "name: must not be empty")
    assert ok(http.get(f"{INVITES}/{invite['id']}"))["status"] == "pending"


def test_a_used_token_cannot_be_used_again(http: httpx.Client) -> None:
    invite = new_invite(http)
    ok(http.post(ACCEPT, json={"token": token_of(invite), "name": "First"}))
    response = http.post(ACCEPT, json={"token": token_of(invite), "name": "Second"})
    assert_error(response, 409, "conflict_error", "has already been accepted")


def test_the_token_of_a_deleted_invite_is_refused(http: httpx.Client) -> None:
    invite = new_invite(http)
    ok(http.delete(f"{INVITES}/{invite['id']}"))
    response = http.post(ACCEPT, json={"token": token_of(invite), "name": "Late"})
    assert_error(response, 400, "invalid_request_error", "was deleted")


def test_an_expired_invite_reads_expired_and_its_token_is_refused(server: Server, http: httpx.Client) -> None:
    invite = new_invite(http)
    set_in_database(server.db, Invite.__table__, invite["id"], expires_at=PAST)

    assert ok(http.get(f"{INVITES}/{invite['id']}"))["status"] == "expired"
    expired = ok(http.get(INVITES, params={"statuses[]": "expired", "email": invite["email"]}))["data"]
    assert [row["id"] for row in expired] == [invite["id"]]
    assert expired[0]["status"] == "expired"
    pending = ok(http.get(INVITES, params={"statuses": "pending", "email": invite["email"]}))["data"]
    assert pending == []

    response = http.post(ACCEPT, json={"token": token_of(invite), "name": "Too late"})
    assert_error(response, 400, "invalid_request_error", "expired at 2020-01-01T00:00:00.000000Z")

    # an expired invite does not block a new one for the same address
    assert ok(http.post(INVITES, json={"email": invite["email"], "role": "user"}))["status"] == "pending"


# --------------------------------------------------------------------------------------------------
# users


def test_a_user_cannot_be_given_the_admin_role(http: httpx.Client) -> None:
    user = new_user(http)
    response = http.post(f"{USERS}/{user['id']}", json={"role": "admin"})
    assert_error(response, 400, "invalid_request_error", "role: cannot be 'admin'")
    assert ok(http.get(f"{USERS}/{user['id']}"))["role"] == "developer"


def test_the_sdk_raises_bad_request_for_promoting_to_admin(client: anthropic.Anthropic, http: httpx.Client) -> None:
    user = new_user(http)
    with pytest.raises(anthropic.BadRequestError):
        client.organization.users.update(user["id"], role="admin")  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ["owner", "workspace_user", "Developer"])
def test_a_user_cannot_be_given_an_unknown_role(http: httpx.Client, role: str) -> None:
    user = new_user(http)
    response = http.post(f"{USERS}/{user['id']}", json={"role": role})
    assert_error(response, 400, "invalid_request_error", f"role: {role!r} is not one of")


def test_an_unknown_user_is_404(http: httpx.Client) -> None:
    message = f"user {UNKNOWN_USER!r} not found"
    assert_error(http.get(f"{USERS}/{UNKNOWN_USER}"), 404, "not_found_error", message)
    assert_error(http.post(f"{USERS}/{UNKNOWN_USER}", json={"role": "user"}), 404, "not_found_error", message)
    assert_error(http.delete(f"{USERS}/{UNKNOWN_USER}"), 404, "not_found_error", message)


def test_the_sdk_raises_not_found_for_an_unknown_user(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.organization.users.retrieve(UNKNOWN_USER)
    assert caught.value.status_code == 404


def test_a_removed_user_is_404_afterwards(http: httpx.Client) -> None:
    user = new_user(http)
    assert ok(http.delete(f"{USERS}/{user['id']}")) == {"id": user["id"], "type": "user_deleted"}
    assert_error(http.get(f"{USERS}/{user['id']}"), 404, "not_found_error", "not found")
    assert_error(http.delete(f"{USERS}/{user['id']}"), 404, "not_found_error", "not found")


def test_the_last_admin_cannot_be_demoted(http: httpx.Client) -> None:
    root = root_user_id(http)
    response = http.post(f"{USERS}/{root}", json={"role": "developer"})
    assert_error(response, 400, "invalid_request_error", "last admin")
    assert ok(http.get(f"{USERS}/{root}"))["role"] == "admin"


def test_the_last_admin_cannot_be_removed_while_others_remain(http: httpx.Client) -> None:
    new_user(http)  # so the admin is not also the only member
    root = root_user_id(http)
    response = http.delete(f"{USERS}/{root}")
    assert_error(response, 400, "invalid_request_error", "last admin and cannot be removed")
    assert error_code(response) is None
    assert ok(http.get(f"{USERS}/{root}"))["role"] == "admin"


def test_the_only_member_cannot_be_removed(database: Database, tmp_path: Path) -> None:
    lonely = start_server(database, tmp_path)
    try:
        with lonely.http() as http:
            response = http.delete(f"{USERS}/{lonely.user['id']}")
            assert_error(response, 400, "invalid_request_error", "only member and cannot be removed")
            assert error_code(response) == "cannot_remove_last_member"
        with pytest.raises(anthropic.BadRequestError) as caught:
            lonely.client().organization.users.remove(lonely.user["id"])
        assert caught.value.error_code == "cannot_remove_last_member"
        assert lonely.client().organization.users.retrieve(lonely.user["id"]).role == "admin"
    finally:
        stop_server(lonely)


# --------------------------------------------------------------------------------------------------
# workspaces


@pytest.mark.parametrize("key", ["anthropic", "anthropic-team", "Anthropic_cost", "ANTHROPICx", "aNtHrOpIc"])
def test_a_tag_key_beginning_with_anthropic_is_refused_in_any_case(http: httpx.Client, key: str) -> None:
    response = http.post(WORKSPACES, json={"name": unique(), "tags": {key: "v"}})
    assert_error(response, 400, "invalid_request_error", "may not begin with 'anthropic'")
    workspace = new_workspace(http)
    response = http.post(f"{WORKSPACES}/{workspace['id']}", json={"tags": {key: "v"}})
    assert_error(response, 400, "invalid_request_error", f"tags: key {key!r} may not begin with 'anthropic'")


def test_a_tag_key_merely_containing_anthropic_is_allowed(http: httpx.Client) -> None:
    assert new_workspace(http, tags={"not-anthropic": "ok"})["tags"] == {"not-anthropic": "ok"}


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"": "v"}, "keys must not be empty"),
        ({"k" * 65: "v"}, "longer than 64 characters"),
        ({"k": "v" * 257}, "longer than 256 characters"),
        ({f"k{i}": "v" for i in range(51)}, "at most 50 tags, got 51"),
    ],
    ids=["empty-key", "long-key", "long-value", "too-many"],
)
def test_tags_over_the_limits_are_refused(http: httpx.Client, tags: dict[str, str], message: str) -> None:
    assert_error(http.post(WORKSPACES, json={"name": unique(), "tags": tags}), 400, "invalid_request_error", message)


def test_an_update_that_would_make_too_many_tags_is_refused(http: httpx.Client) -> None:
    workspace = new_workspace(http, tags={f"k{i}": "v" for i in range(50)})
    response = http.post(f"{WORKSPACES}/{workspace['id']}", json={"tags": {"one-more": "v"}})
    assert_error(response, 400, "invalid_request_error", "at most 50 tags")
    # deleting one in the same update makes room
    merged = ok(http.post(f"{WORKSPACES}/{workspace['id']}", json={"tags": {"one-more": "v", "k0": None}}))
    assert len(merged["tags"]) == 50
    assert "k0" not in merged["tags"]


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_an_empty_workspace_name_is_refused(http: httpx.Client, name: str) -> None:
    assert_error(http.post(WORKSPACES, json={"name": name}), 400, "invalid_request_error", "name: must not be empty")
    workspace = new_workspace(http)
    response = http.post(f"{WORKSPACES}/{workspace['id']}", json={"name": name})
    assert_error(response, 400, "invalid_request_error", "name: must not be empty")


def test_a_workspace_name_over_255_characters_is_refused(http: httpx.Client) -> None:
    response = http.post(WORKSPACES, json={"name": "n" * 256})
    assert_error(response, 400, "invalid_request_error", "name: must be at most 255 characters")


def test_a_duplicate_active_workspace_name_is_a_conflict(http: httpx.Client) -> None:
    first = new_workspace(http)
    response = http.post(WORKSPACES, json={"name": first["name"].upper()})
    assert_error(response, 409, "conflict_error", f"a workspace named {first['name']!r} already exists")
    assert first["id"] in response.json()["error"]["message"]

    other = new_workspace(http)
    response = http.post(f"{WORKSPACES}/{other['id']}", json={"name": f"  {first['name']}  "})
    assert_error(response, 409, "conflict_error", "already exists")


def test_an_archived_workspace_name_can_be_reused(http: httpx.Client) -> None:
    first = new_workspace(http)
    ok(http.post(f"{WORKSPACES}/{first['id']}/archive"))
    assert new_workspace(http, name=first["name"])["id"] != first["id"]


def test_renaming_a_workspace_to_a_new_case_of_its_own_name_is_not_a_conflict(http: httpx.Client) -> None:
    workspace = new_workspace(http)
    renamed = ok(http.post(f"{WORKSPACES}/{workspace['id']}", json={"name": workspace["name"].upper()}))
    assert renamed["name"] == workspace["name"].upper()


def test_the_sdk_raises_conflict_for_a_duplicate_workspace_name(client: anthropic.Anthropic) -> None:
    name = unique("sdk-dup")
    client.organization.workspaces.create(name=name)
    with pytest.raises(anthropic.ConflictError) as caught:
        client.organization.workspaces.create(name=name)
    assert caught.value.status_code == 409


def test_the_workspace_geo_cannot_change_on_update(http: httpx.Client) -> None:
    workspace = new_workspace(http)
    for geo in ("us", "eu"):
        response = http.post(f"{WORKSPACES}/{workspace['id']}", json={"data_residency": {"workspace_geo": geo}})
        assert_error(response, 400, "invalid_request_error", "data_residency.workspace_geo")
        assert "immutable" in response.json()["error"]["message"]


def test_the_default_inference_geo_must_be_allowed_on_create(http: httpx.Client) -> None:
    residency = {"allowed_inference_geos": ["us"], "default_inference_geo": "global"}
    response = http.post(WORKSPACES, json={"name": unique(), "data_residency": residency})
    assert_error(response, 400, "invalid_request_error", "data_residency.default_inference_geo")
    assert "not in allowed_inference_geos" in response.json()["error"]["message"]
    # the default of the default ("global") is not in ["us"] either
    response = http.post(WORKSPACES, json={"name": unique(), "data_residency": {"allowed_inference_geos": ["us"]}})
    assert_error(response, 400, "invalid_request_error", "'global' is not in allowed_inference_geos")


def test_the_default_inference_geo_must_be_allowed_on_update(http: httpx.Client) -> None:
    workspace = new_workspace(http, data_residency={"allowed_inference_geos": ["us"], "default_inference_geo": "us"})
    url = f"{WORKSPACES}/{workspace['id']}"
    response = http.post(url, json={"data_residency": {"default_inference_geo": "global"}})
    assert_error(response, 400, "invalid_request_error", "'global' is not in allowed_inference_geos")

    wide = new_workspace(http, data_residency={"allowed_inference_geos": ["us", "global"]})
    response = http.post(
        f"{WORKSPACES}/{wide['id']}", json={"data_residency": {"allowed_inference_geos": ["us"]}}
    )  # the current default, global, would no longer be allowed
    assert_error(response, 400, "invalid_request_error", "data_residency.default_inference_geo")
    assert ok(http.get(f"{WORKSPACES}/{wide['id']}"))["data_residency"]["allowed_inference_geos"] == ["us", "global"]


@pytest.mark.parametrize(
    ("residency", "message"),
    [
        ({"default_inference_geo": "eu"}, "data_residency.default_inference_geo: unknown inference geo 'eu'"),
        ({"allowed_inference_geos": ["us", "mars"]}, "data_residency.allowed_inference_geos: unknown inference geo"),
        ({"allowed_inference_geos": "everywhere"}, "neither 'unrestricted' nor a list"),
        ({"allowed_inference_geos": ["us", "us"]}, "lists a geo more than once"),
        ({"workspace_geo": "eu"}, "data_residency.workspace_geo: unknown workspace geo 'eu'"),
    ],
)
def test_an_unknown_geo_is_refused(http: httpx.Client, residency: dict[str, Any], message: str) -> None:
    response = http.post(WORKSPACES, json={"name": unique(), "data_residency": residency})
    assert_error(response, 400, "invalid_request_error", message)


def test_an_empty_allowed_geo_list_is_refused_on_create_and_update(http: httpx.Client) -> None:
    residency = {"allowed_inference_geos": []}
    response = http.post(WORKSPACES, json={"name": unique(), "data_residency": residency})
    assert_error(response, 400, "invalid_request_error", "must list at least one geo")
    workspace = new_workspace(http)
    response = http.post(f"{WORKSPACES}/{workspace['id']}", json={"data_residency": residency})
    assert_error(response, 400, "invalid_request_error", "data_residency.allowed_inference_geos")


@pytest.mark.parametrize("color", ["red", "#12345", "#1234567", "123456", "#GGGGGG", "", "#123456\n"])
def test_a_bad_display_color_is_refused(http: httpx.Client, color: str) -> None:
    response = http.post(WORKSPACES, json={"name": unique(), "display_color": color})
    assert_error(response, 400, "invalid_request_error", f"display_color: {color!r} is not a hex colour")
    workspace = new_workspace(http)
    response = http.post(f"{WORKSPACES}/{workspace['id']}", json={"display_color": color})
    assert_error(response, 400, "invalid_request_error", "display_color")


@pytest.mark.parametrize("field", ["external_key_id", "user_profile_id"])
def test_unsupported_workspace_fields_are_refused_when_not_null(http: httpx.Client, field: str) -> None:
    response = http.post(WORKSPACES, json={"name": unique(), field: "some-id"})
    assert_error(response, 400, "invalid_request_error", f"{field}: ")
    assert "not supported" in response.json()["error"]["message"]
    workspace = new_workspace(http, **{field: None})
    response = http.post(f"{WORKSPACES}/{workspace['id']}", json={field: "some-id"})
    assert_error(response, 400, "invalid_request_error", f"{field}: ")


def test_the_default_workspace_cannot_be_archived(http: httpx.Client, default_workspace_id: str) -> None:
    response = http.post(f"{WORKSPACES}/{default_workspace_id}/archive")
    assert_error(response, 400, "invalid_request_error", "the default workspace cannot be archived")
    assert ok(http.get(f"{WORKSPACES}/{default_workspace_id}"))["archived_at"] is None


def test_an_archived_workspace_cannot_be_updated(http: httpx.Client) -> None:
    workspace = archived_workspace(http)
    for body in ({"name": unique()}, {"tags": {"a": "b"}}, {"display_color": "#000000"}, {}):
        response = http.post(f"{WORKSPACES}/{workspace['id']}", json=body)
        assert_error(response, 400, "invalid_request_error", f"workspace {workspace['id']} is archived")
    # archiving again is a no-op, not an error
    assert ok(http.post(f"{WORKSPACES}/{workspace['id']}/archive"))["archived_at"] == workspace["archived_at"]


def test_the_archive_endpoint_refuses_a_body_with_fields(http: httpx.Client) -> None:
    workspace = new_workspace(http)
    response = http.post(f"{WORKSPACES}/{workspace['id']}/archive", json={"force": True})
    assert_error(response, 400, "invalid_request_error", "force: unknown field")
    assert ok(http.get(f"{WORKSPACES}/{workspace['id']}"))["archived_at"] is None


def test_an_unknown_workspace_is_404(http: httpx.Client) -> None:
    message = f"workspace {UNKNOWN_WORKSPACE!r} not found"
    url = f"{WORKSPACES}/{UNKNOWN_WORKSPACE}"
    assert_error(http.get(url), 404, "not_found_error", message)
    assert_error(http.post(url, json={"name": unique()}), 404, "not_found_error", message)
    assert_error(http.post(f"{url}/archive"), 404, "not_found_error", message)


def test_the_sdk_raises_not_found_for_an_unknown_workspace(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.organization.workspaces.archive(UNKNOWN_WORKSPACE)


# --------------------------------------------------------------------------------------------------
# workspace members


def members_url(workspace_id: str, user_id: str | None = None) -> str:
    base = f"{WORKSPACES}/{workspace_id}/members"
    return f"{base}/{user_id}" if user_id else base


def test_a_new_member_cannot_be_workspace_billing(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    body = {"user_id": user["id"], "workspace_role": "workspace_billing"}
    response = http.post(members_url(workspace["id"]), json=body)
    assert_error(response, 400, "invalid_request_error", "workspace_role: cannot be 'workspace_billing'")


def test_an_existing_member_can_be_moved_to_workspace_billing(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    ok(http.post(members_url(workspace["id"]), json={"user_id": user["id"], "workspace_role": "workspace_user"}))
    moved = ok(http.post(members_url(workspace["id"], user["id"]), json={"workspace_role": "workspace_billing"}))
    assert moved["workspace_role"] == "workspace_billing"


@pytest.mark.parametrize("role", ["admin", "workspace_owner", "developer"])
def test_an_unknown_workspace_role_is_refused_on_add_and_update(http: httpx.Client, role: str) -> None:
    workspace, user = new_workspace(http), new_user(http)
    response = http.post(members_url(workspace["id"]), json={"user_id": user["id"], "workspace_role": role})
    assert_error(response, 400, "invalid_request_error", f"workspace_role: {role!r} is not one of")
    ok(http.post(members_url(workspace["id"]), json={"user_id": user["id"], "workspace_role": "workspace_user"}))
    response = http.post(members_url(workspace["id"], user["id"]), json={"workspace_role": role})
    assert_error(response, 400, "invalid_request_error", f"workspace_role: {role!r} is not one of")


def test_adding_an_unknown_user_is_404(http: httpx.Client) -> None:
    workspace = new_workspace(http)
    body = {"user_id": UNKNOWN_USER, "workspace_role": "workspace_user"}
    assert_error(http.post(members_url(workspace["id"]), json=body), 404, "not_found_error", f"user {UNKNOWN_USER!r}")


def test_adding_a_removed_user_is_404(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    ok(http.delete(f"{USERS}/{user['id']}"))
    body = {"user_id": user["id"], "workspace_role": "workspace_user"}
    assert_error(http.post(members_url(workspace["id"]), json=body), 404, "not_found_error", "not found")


def test_members_of_an_unknown_workspace_are_404(http: httpx.Client) -> None:
    user = new_user(http)
    message = f"workspace {UNKNOWN_WORKSPACE!r} not found"
    body = {"user_id": user["id"], "workspace_role": "workspace_user"}
    assert_error(http.post(members_url(UNKNOWN_WORKSPACE), json=body), 404, "not_found_error", message)
    assert_error(http.get(members_url(UNKNOWN_WORKSPACE)), 404, "not_found_error", message)
    assert_error(http.get(members_url(UNKNOWN_WORKSPACE, user["id"])), 404, "not_found_error", message)
    update = http.post(members_url(UNKNOWN_WORKSPACE, user["id"]), json={"workspace_role": "workspace_user"})
    assert_error(update, 404, "not_found_error", message)
    assert_error(http.delete(members_url(UNKNOWN_WORKSPACE, user["id"])), 404, "not_found_error", message)


def test_adding_the_same_member_twice_is_a_conflict(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    body = {"user_id": user["id"], "workspace_role": "workspace_developer"}
    ok(http.post(members_url(workspace["id"]), json=body))
    response = http.post(members_url(workspace["id"]), json={**body, "workspace_role": "workspace_admin"})
    assert_error(response, 409, "conflict_error", f"user {user['id']} is already a member")
    assert ok(http.get(members_url(workspace["id"], user["id"])))["workspace_role"] == "workspace_developer"


def test_the_sdk_raises_conflict_for_a_duplicate_member(client: anthropic.Anthropic, http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    client.organization.workspaces.members.add(workspace["id"], user_id=user["id"], workspace_role="workspace_user")
    with pytest.raises(anthropic.ConflictError):
        client.organization.workspaces.members.add(workspace["id"], user_id=user["id"], workspace_role="workspace_user")


def test_a_non_member_is_404_on_get_update_and_remove(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    message = f"user {user['id']!r} is not a member of workspace {workspace['id']}"
    url = members_url(workspace["id"], user["id"])
    assert_error(http.get(url), 404, "not_found_error", message)
    assert_error(http.post(url, json={"workspace_role": "workspace_user"}), 404, "not_found_error", message)
    assert_error(http.delete(url), 404, "not_found_error", message)


def test_a_removed_member_is_404_when_removed_again(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    ok(http.post(members_url(workspace["id"]), json={"user_id": user["id"], "workspace_role": "workspace_user"}))
    ok(http.delete(members_url(workspace["id"], user["id"])))
    assert_error(http.delete(members_url(workspace["id"], user["id"])), 404, "not_found_error", "is not a member")


def test_a_member_cannot_be_added_to_an_archived_workspace(http: httpx.Client) -> None:
    workspace, user = archived_workspace(http), new_user(http)
    body = {"user_id": user["id"], "workspace_role": "workspace_user"}
    response = http.post(members_url(workspace["id"]), json=body)
    assert_error(response, 400, "invalid_request_error", f"workspace {workspace['id']} is archived")


def test_a_member_of_an_archived_workspace_cannot_change_role(http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    ok(http.post(members_url(workspace["id"]), json={"user_id": user["id"], "workspace_role": "workspace_user"}))
    ok(http.post(f"{WORKSPACES}/{workspace['id']}/archive"))
    response = http.post(members_url(workspace["id"], user["id"]), json={"workspace_role": "workspace_admin"})
    assert_error(response, 400, "invalid_request_error", "is archived")


# --------------------------------------------------------------------------------------------------
# API keys


def new_key(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    return ok(http.post(API_KEYS, json={"name": unique("key"), **fields}))


@pytest.mark.parametrize("when", ["2020-01-01T00:00:00Z", "2000-06-01T12:00:00+02:00"])
def test_an_api_key_cannot_expire_in_the_past(http: httpx.Client, when: str) -> None:
    response = http.post(API_KEYS, json={"name": unique(), "expires_at": when})
    assert_error(response, 400, "invalid_request_error", "expires_at: ")
    assert "is in the past" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("when", "message"),
    [("2999-01-01T00:00:00", "has no time zone offset"), ("next tuesday", "expires_at: "), ("", "expires_at: ")],
)
def test_an_api_key_expiry_must_be_an_rfc3339_timestamp(http: httpx.Client, when: str, message: str) -> None:
    response = http.post(API_KEYS, json={"name": unique(), "expires_at": when})
    assert_error(response, 400, "invalid_request_error", message)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"])
def test_an_api_key_expiry_that_leaves_the_representable_range_in_utc_is_refused(http: httpx.Client, when: str) -> None:
    response = http.post(API_KEYS, json={"name": unique(), "expires_at": when})
    assert_error(response, 400, "invalid_request_error", f"expires_at: Value error, {when!r} is out of range")


def test_an_api_key_in_an_unknown_workspace_is_404(http: httpx.Client) -> None:
    response = http.post(API_KEYS, json={"name": unique(), "workspace_id": UNKNOWN_WORKSPACE})
    assert_error(response, 404, "not_found_error", f"workspace {UNKNOWN_WORKSPACE!r} not found")


def test_an_api_key_in_an_archived_workspace_is_refused(http: httpx.Client) -> None:
    workspace = archived_workspace(http)
    response = http.post(API_KEYS, json={"name": unique(), "workspace_id": workspace["id"]})
    assert_error(response, 400, "invalid_request_error", f"workspace {workspace['id']} is archived")


@pytest.mark.parametrize("name", ["", "  ", "k" * 256])
def test_an_api_key_needs_a_sensible_name(http: httpx.Client, name: str) -> None:
    assert_error(http.post(API_KEYS, json={"name": name}), 400, "invalid_request_error", "name: must")
    key = new_key(http)
    assert_error(http.post(f"{API_KEYS}/{key['id']}", json={"name": name}), 400, "invalid_request_error", "name: ")


def test_an_archived_api_key_cannot_be_changed(http: httpx.Client) -> None:
    key = new_key(http)
    assert ok(http.post(f"{API_KEYS}/{key['id']}", json={"status": "archived"}))["status"] == "archived"
    for body in ({"status": "active"}, {"status": "inactive"}, {"name": unique()}, {"status": "archived"}):
        response = http.post(f"{API_KEYS}/{key['id']}", json=body)
        assert_error(response, 400, "invalid_request_error", f"API key {key['id']} is archived and cannot be changed")


def test_keys_of_an_archived_workspace_are_archived_and_frozen(http: httpx.Client) -> None:
    workspace = new_workspace(http)
    key = new_key(http, workspace_id=workspace["id"])
    ok(http.post(f"{WORKSPACES}/{workspace['id']}/archive"))
    assert ok(http.get(f"{API_KEYS}/{key['id']}"))["status"] == "archived"
    response = http.post(f"{API_KEYS}/{key['id']}", json={"status": "active"})
    assert_error(response, 400, "invalid_request_error", "is archived")


def test_an_expired_api_key_cannot_be_reactivated(server: Server, http: httpx.Client) -> None:
    key = new_key(http, expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    ok(http.post(f"{API_KEYS}/{key['id']}", json={"status": "inactive"}))
    set_in_database(server.db, ApiKey.__table__, key["id"], expires_at=PAST)

    assert ok(http.get(f"{API_KEYS}/{key['id']}"))["status"] == "expired"
    for status in ("active", "inactive"):
        response = http.post(f"{API_KEYS}/{key['id']}", json={"status": status})
        assert_error(response, 400, "invalid_request_error", "expired at 2020-01-01T00:00:00.000000Z")
        assert "cannot be reactivated" in response.json()["error"]["message"]
    # an expired key may still be renamed and archived
    assert ok(http.post(f"{API_KEYS}/{key['id']}", json={"name": "renamed"}))["status"] == "expired"
    assert ok(http.post(f"{API_KEYS}/{key['id']}", json={"status": "archived"}))["status"] == "archived"


@pytest.mark.parametrize("status", ["bogus", "expired", "ACTIVE", ""])
def test_an_invalid_api_key_status_is_refused(http: httpx.Client, status: str) -> None:
    key = new_key(http)
    response = http.post(f"{API_KEYS}/{key['id']}", json={"status": status})
    assert_error(response, 400, "invalid_request_error", f"status: {status!r} is not one of")
    assert ok(http.get(f"{API_KEYS}/{key['id']}"))["status"] == "active"


def test_an_unknown_api_key_is_404(http: httpx.Client) -> None:
    missing = "apikey_01000000000000000000000000"
    assert_error(http.get(f"{API_KEYS}/{missing}"), 404, "not_found_error", f"API key {missing!r} not found")
    response = http.post(f"{API_KEYS}/{missing}", json={"status": "inactive"})
    assert_error(response, 404, "not_found_error", f"API key {missing!r} not found")


def test_an_admin_key_id_is_not_an_api_key(server: Server, http: httpx.Client) -> None:
    admin_keys = json.loads(cli(server.db, "admin-keys", "list", "--json").stdout)
    assert_error(http.get(f"{API_KEYS}/{admin_keys[0]['id']}"), 404, "not_found_error", "not found")


def test_the_sdk_raises_not_found_for_an_unknown_api_key(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.organization.api_keys.retrieve("apikey_01000000000000000000000000")
    assert caught.value.status_code == 404


# --------------------------------------------------------------------------------------------------
# concurrent requests: each rule holds when the requests race (on PostgreSQL they run truly in
# parallel; SQLite serializes writers). Before the services took the organization lock for these
# changes, PostgreSQL created duplicate workspace names, answered a duplicate member with a 500, left
# keys created during an archive active in the archived workspace, let a racing delete mark an
# accepted invite deleted (its user kept), and told a second accept of a used token 400 already_member.

RACERS = 8


def race(server: Server, send: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    """Send RACERS requests at the same moment, each on its own connection."""
    start = threading.Barrier(RACERS)

    def one(index: int) -> httpx.Response:
        with server.http() as client:
            start.wait(timeout=30)
            return send(client, index)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def test_racing_creates_of_one_workspace_name_make_exactly_one_workspace(server: Server, http: httpx.Client) -> None:
    name = unique("race")
    responses = race(server, lambda client, _: client.post(WORKSPACES, json={"name": name}))
    assert sorted(r.status_code for r in responses) == [200] + [409] * (RACERS - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "conflict_error", f"a workspace named {name!r} already exists")
    listed = ok(http.get(WORKSPACES, params={"limit": 1000}))["data"]
    assert [w["name"] for w in listed].count(name) == 1


def test_racing_adds_of_one_member_make_one_membership_and_conflicts(server: Server, http: httpx.Client) -> None:
    workspace, user = new_workspace(http), new_user(http)
    body = {"user_id": user["id"], "workspace_role": "workspace_user"}
    responses = race(server, lambda client, _: client.post(members_url(workspace["id"]), json=body))
    assert sorted(r.status_code for r in responses) == [200] + [409] * (RACERS - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "conflict_error", "is already a member")
    assert len(ok(http.get(members_url(workspace["id"])))["data"]) == 1


def test_keys_created_while_their_workspace_is_archived_end_up_archived_or_refused(
    server: Server, http: httpx.Client
) -> None:
    workspace = new_workspace(http)

    def send(client: httpx.Client, index: int) -> httpx.Response:
        if index == RACERS // 2:
            return client.post(f"{WORKSPACES}/{workspace['id']}/archive")
        return client.post(API_KEYS, json={"name": unique("racer"), "workspace_id": workspace["id"]})

    responses = race(server, send)
    for response in responses:
        if response.status_code != 200:
            assert_error(response, 400, "invalid_request_error", f"workspace {workspace['id']} is archived")
    keys = ok(http.get(API_KEYS, params={"workspace_id": workspace["id"], "limit": 1000}))["data"]
    assert len(keys) == sum(r.status_code == 200 for r in responses) - 1  # minus the archive itself
    assert {k["status"] for k in keys} <= {"archived"}


def test_racing_accepts_of_one_token_make_one_user_and_the_others_are_told_it_was_used(
    server: Server, http: httpx.Client
) -> None:
    invite = new_invite(http)
    token = token_of(invite)
    responses = race(server, lambda client, i: client.post(ACCEPT, json={"token": token, "name": f"Racer {i}"}))
    assert sorted(r.status_code for r in responses) == [200] + [409] * (RACERS - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "conflict_error", "has already been accepted")
    assert len(ok(http.get(USERS, params={"email": invite["email"]}))["data"]) == 1


def test_an_invite_deleted_while_it_is_accepted_ends_either_accepted_or_deleted(
    server: Server, http: httpx.Client
) -> None:
    for _ in range(3):
        invite = new_invite(http)
        token = token_of(invite)

        def send(client: httpx.Client, index: int, invite_id: str = invite["id"], token: str = token) -> httpx.Response:
            if index % 2:
                return client.delete(f"{INVITES}/{invite_id}")
            return client.post(ACCEPT, json={"token": token, "name": f"Racer {index}"})

        responses = race(server, send)
        assert all(r.status_code in (200, 400, 409) for r in responses), [r.text for r in responses]
        status = ok(http.get(f"{INVITES}/{invite['id']}"))["status"]
        users = ok(http.get(USERS, params={"email": invite["email"]}))["data"]
        assert (status, len(users)) in {("accepted", 1), ("deleted", 0)}
