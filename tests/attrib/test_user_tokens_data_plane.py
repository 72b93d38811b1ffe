"""A user's access token on the data plane, with the official SDK against a real server (SQLite and
PostgreSQL): it calls Messages, count_tokens and models in its workspace; its usage is the user's in
the usage, cost and Claude Code reports; refusals say what is wrong; a user spend limit binds it.

Tokens are issued by ``UserTokenService`` on the server's database (the device flow that hands them to
a developer is tested with sign-in); users are rows, memberships go through the Admin API (so the
cache events that drop cached grants are the real ones)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anthropic
import httpx
import pytest
from sqlalchemy import select

from orgwarden import ids
from orgwarden.config import load_settings
from orgwarden.domain.clock import utcnow
from orgwarden.services.user_tokens import UserTokenService
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import UsageRecord, User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import TLS, SdkHttpClient, Server, assert_error, query_db, unique

T = TypeVar("T")
MODEL = "claude-haiku-4-5"
USAGE, COST = "/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"


def on_db(server: Server, work: Callable[[UnitOfWorkFactory], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        try:
            return await work(UnitOfWorkFactory(session_factory(engine)))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def new_user(server: Server, role: str = "developer") -> dict[str, str]:
    email = f"{unique('dev')}@acme.test"

    async def work(factory: UnitOfWorkFactory) -> str:
        async with factory() as uow:
            user = User(
                id=ids.new_id(ids.USER), organization_id=server.organization["id"], email=email, name=email,
                role=role, added_at=utcnow(), removed_at=None,
            )  # fmt: skip
            uow.users.add(user)
            await uow.commit()
            return user.id

    return {"id": on_db(server, work), "email": email}


def issue(server: Server, user_id: str, workspace_id: str | None, ttl: int = 3600) -> str:
    async def work(factory: UnitOfWorkFactory) -> str:
        tokens = UserTokenService(factory, ttl, 86_400)
        issued = await tokens.issue(
            organization_id=server.organization["id"], user_id=user_id, workspace_id=workspace_id,
            client_id="orgwarden-cli", scope="user",
        )  # fmt: skip
        return issued.access_token

    return on_db(server, work)


def revoke(server: Server, token: str) -> None:
    async def work(factory: UnitOfWorkFactory) -> None:
        await UserTokenService(factory, 3600, 86_400).revoke(token)

    on_db(server, work)


@dataclass
class Team:
    workspace: dict[str, Any]
    user: dict[str, str]
    token: str


def new_team(server: Server, workspace_role: str = "workspace_developer") -> Team:
    with server.http() as http:
        workspace = http.post("/v1/organizations/workspaces", json={"name": unique("ws")}).json()
        user = new_user(server)
        added = http.post(
            f"/v1/organizations/workspaces/{workspace['id']}/members",
            json={"user_id": user["id"], "workspace_role": workspace_role},
        )
        assert added.status_code == 200, added.text
    return Team(workspace, user, issue(server, user["id"], workspace["id"]))


def ask(base_url: str, token: str, **headers: str) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30, verify=TLS) as client:
        return client.post(
            f"{base_url}/v1/messages", json=body, headers={"x-api-key": token, "anthropic-version": "2023-06-01",
                                                           **headers},
        )  # fmt: skip


def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def records_of(server: Server, workspace_id: str) -> list[UsageRecord]:
    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        session = uow._session
        assert session is not None
        stmt = select(UsageRecord).where(UsageRecord.workspace_id == workspace_id).order_by(UsageRecord.id)
        return list((await session.scalars(stmt)).all())

    return query_db(server.db, read)


@pytest.fixture(scope="module")
def team(server: Server) -> Team:
    return new_team(server)


# -- calling --------------------------------------------------------------------------------------------


def test_a_user_token_calls_messages_count_tokens_and_models_with_the_sdk(server: Server, team: Team) -> None:
    client = anthropic.Anthropic(
        api_key=team.token, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    message = client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert message.type == "message"
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["anthropic-workspace-id"] == team.workspace["id"]
    assert raw.headers["anthropic-organization-id"] == server.organization["id"]
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hello"}])
    assert counted.input_tokens > 0
    assert any(model.id for model in client.models.list())
    with client.messages.stream(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert stream.get_final_message().type == "message"
    # Authorization: Bearer (what ANTHROPIC_AUTH_TOKEN sends; apiKeyHelper sends both)
    bearer = anthropic.Anthropic(
        auth_token=team.token, api_key=None, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    assert bearer.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}]).input_tokens > 0
    # the workspace header must match the token's workspace, as for a key
    other = ask(server.base_url, team.token, **{"anthropic-workspace-id": "wrkspc_01000000000000000000000000"})
    assert_error(other, 403, "permission_error", "anthropic-workspace-id")


def test_usage_from_a_user_token_is_attributed_to_the_user(server: Server, team: Team) -> None:
    for _ in range(2):
        assert ask(server.base_url, team.token).status_code == 200
    eventually(lambda: len([r for r in records_of(server, team.workspace["id"]) if r.endpoint == "messages"]) >= 2)
    records = [r for r in records_of(server, team.workspace["id"]) if r.endpoint == "messages"]
    assert {(r.user_id, r.api_key_id) for r in records} == {(team.user["id"], "")}
    # an API key's traffic in the same workspace stays the key's
    with server.http() as http:
        key = http.post(
            "/v1/organizations/api_keys", json={"name": unique("k"), "workspace_id": team.workspace["id"]}
        ).json()
    assert ask(server.base_url, key["key"]).status_code == 200
    eventually(lambda: any(r.api_key_id == key["id"] for r in records_of(server, team.workspace["id"])))
    assert [r.user_id for r in records_of(server, team.workspace["id"]) if r.api_key_id == key["id"]] == [None]

    day = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    query: Any = {"starting_at": day, "group_by[]": ["account_id", "api_key_id"],
                  "workspace_ids[]": team.workspace["id"]}  # fmt: skip
    with server.http() as http:
        results = http.get(USAGE, params=query).json()["data"][0]["results"]
        by_account = {(r["account_id"], r["api_key_id"]): r for r in results}
        assert set(by_account) == {(team.user["id"], None), (None, key["id"])}
        assert by_account[(team.user["id"], None)]["output_tokens"] > 0
        only = http.get(USAGE, params={"starting_at": day, "account_ids[]": team.user["id"]}).json()
        assert len(only["data"][0]["results"]) == 1
        assert only["data"][0]["results"][0]["account_id"] is None  # not grouped: null, as the spec says
        mine = only["data"][0]["results"][0]["output_tokens"]
        assert mine == by_account[(team.user["id"], None)]["output_tokens"]
        # the cost report (orgwarden extension): by account, and one account's
        cost = http.get(COST, params={"starting_at": day, "group_by[]": ["workspace_id", "account_id"]}).json()
        lines = [r for r in cost["data"][0]["results"] if r["workspace_id"] == team.workspace["id"]]
        assert {r["account_id"] for r in lines} == {team.user["id"], None}
        just = http.get(COST, params={"starting_at": day, "account_ids[]": team.user["id"]}).json()
        user_line = next(r for r in lines if r["account_id"] == team.user["id"])
        assert [r["amount"] for r in just["data"][0]["results"]] == [user_line["amount"]]
        refused = http.get(COST, params={"starting_at": day, "group_by[]": ["description", "account_id"]})
        assert_error(refused, 400, "invalid_request_error", "cannot be combined with group_by description")


# -- refusals ------------------------------------------------------------------------------------------


def test_an_unknown_or_revoked_token_is_refused_with_401(server: Server, team: Team) -> None:
    assert_error(ask(server.base_url, "ow-at01-" + "x" * 43), 401, "authentication_error", "orgwarden token")
    token = issue(server, team.user["id"], team.workspace["id"])
    assert ask(server.base_url, token).status_code == 200
    revoke(server, token)
    eventually(lambda: ask(server.base_url, token).status_code == 401, within=1.5)  # cache dropped within 1 s
    assert_error(ask(server.base_url, token), 401, "authentication_error", "expired or revoked")
    client = anthropic.Anthropic(api_key=token, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())
    with pytest.raises(anthropic.AuthenticationError):
        client.models.list()


def test_a_token_that_expires_while_cached_is_refused_with_401(server: Server, team: Team) -> None:
    token = issue(server, team.user["id"], team.workspace["id"], ttl=2)
    assert ask(server.base_url, token).status_code == 200  # cached now
    time.sleep(2.2)
    assert_error(ask(server.base_url, token), 401, "authentication_error", "expired")


def test_a_token_without_a_workspace_or_a_role_there_is_refused_with_403(server: Server, team: Team) -> None:
    nowhere = issue(server, team.user["id"], None)
    assert_error(ask(server.base_url, nowhere), 403, "permission_error", "orgwarden login --workspace")
    outsider = new_user(server)
    assert_error(
        ask(server.base_url, issue(server, outsider["id"], team.workspace["id"])), 403, "permission_error",
        "not a member of workspace",
    )  # fmt: skip
    billing = new_team(server, "workspace_user")
    assert ask(server.base_url, billing.token).status_code == 200
    with server.http() as http:
        changed = http.post(
            f"/v1/organizations/workspaces/{billing.workspace['id']}/members/{billing.user['id']}",
            json={"workspace_role": "workspace_billing"},
        )
        assert changed.status_code == 200, changed.text
    # the role change reaches the cached grant within a second
    eventually(lambda: ask(server.base_url, billing.token).status_code == 403, within=1.5)
    assert_error(ask(server.base_url, billing.token), 403, "permission_error", "(workspace_billing) cannot call")
    with server.http() as http:
        http.delete(f"/v1/organizations/workspaces/{billing.workspace['id']}/members/{billing.user['id']}")
    eventually(lambda: "not a member" in ask(server.base_url, billing.token).text, within=1.5)
    client = anthropic.Anthropic(api_key=nowhere, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])


def test_a_removed_users_tokens_stop_working_within_a_second(server: Server) -> None:
    gone = new_team(server)
    assert ask(server.base_url, gone.token).status_code == 200
    client = server.client()
    client.organization.users.remove(gone.user["id"])
    eventually(lambda: ask(server.base_url, gone.token).status_code == 401, within=1.5)


def test_an_organization_admin_may_call_any_workspace_and_members_the_default_one(server: Server) -> None:
    admin = new_user(server, role="admin")
    with server.http() as http:
        workspace = http.post("/v1/organizations/workspaces", json={"name": unique("ws")}).json()
    assert ask(server.base_url, issue(server, admin["id"], workspace["id"])).status_code == 200

    async def default_workspace(uow: UnitOfWork) -> str:
        return (await uow.workspaces.default(server.organization["id"])).id

    default = query_db(server.db, default_workspace)
    for role, status in (("developer", 200), ("user", 200), ("claude_code_user", 200), ("billing", 403)):
        user = new_user(server, role=role)
        assert ask(server.base_url, issue(server, user["id"], default)).status_code == status, role


# -- user spend limits ----------------------------------------------------------------------------------


def test_a_user_spend_limit_binds_every_token_of_the_user_and_nothing_else(server: Server) -> None:
    limited = new_team(server)
    second_token = issue(server, limited.user["id"], limited.workspace["id"])
    assert ask(server.base_url, limited.token).status_code == 200  # some spend before the limit
    client = server.client()
    created = client.beta.organization.spend_limits.set(
        amount="1", period="daily", scope={"type": "user", "user_id": limited.user["id"]}
    )
    assert created.scope.type == "user"
    assert created.scope.user_id == limited.user["id"]
    listed = client.beta.organization.spend_limits.list()
    assert any(s.id == created.id for s in listed)
    try:
        headers = {"anthropic-simulator-output-tokens": "2000"}

        def spend(token: str) -> httpx.Response:
            body = {"model": MODEL, "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(timeout=30, verify=TLS) as http:
                return http.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": token, **headers})

        time.sleep(1.0)  # every worker reloads the limits within a second
        refused_first = spend(limited.token)  # its worst case (about 1.4 cents) does not fit in 1 cent
        assert_error(refused_first, 400, "invalid_request_error", "user API usage limits")
        refused = spend(second_token)
        assert_error(refused, 400, "invalid_request_error", "You have reached your specified user API usage limits.")
        # the workspace's API keys and other users are not bound
        with server.http() as http:
            key = http.post(
                "/v1/organizations/api_keys", json={"name": unique("k"), "workspace_id": limited.workspace["id"]}
            ).json()
        assert spend(key["key"]).status_code == 200
        other = new_team(server)
        assert spend(other.token).status_code == 200

        # the effective report: the user's row, after every key's, with the user's own spend
        def user_rows_now() -> list[Any]:
            rows = list(client.beta.organization.spend_limits.effective.list(user_ids=[limited.user["id"]]))
            return [r for r in rows if r.actor.type == "user_actor"]

        eventually(lambda: any(float(r.period_to_date_spend) > 0 for r in user_rows_now()))  # records are batched
        user_rows = user_rows_now()
        assert len(user_rows) == 1, user_rows
        (row,) = user_rows
        assert row.actor.user_id == limited.user["id"]
        assert row.actor.email_address == limited.user["email"]
        assert (row.scope.type, row.source.type, row.spend_limit_id) == ("user", "user", created.id)
        assert (row.amount, row.period) == ("1", "daily")
        assert 0 < float(row.period_to_date_spend) <= 1
        everyone = list(client.beta.organization.spend_limits.effective.list(limit=1))  # pages: keys, then users
        assert [r.actor.type for r in everyone][-1] == "user_actor"
        assert any(getattr(r.actor, "user_id", None) == limited.user["id"] for r in everyone)
    finally:
        client.beta.organization.spend_limits.delete(created.id)
    unknown = "user_01000000000000000000000000"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.organization.spend_limits.set(amount="1", scope={"type": "user", "user_id": unknown})


# -- the Claude Code report -----------------------------------------------------------------------------


def test_claude_code_telemetry_sent_with_a_user_token_is_reported_as_the_user(server: Server, team: Team) -> None:
    """Claude Code's exporter with the token as its header (``otelHeadersHelper`` running ``orgwarden
    token``); the export says nothing of the user (no ``user.email``: an API-key sign-in), the
    token does. Two exports with two tokens of the user continue one cumulative series."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    from tests.telemetry.test_claude_code_telemetry import ClaudeCode, export

    code = ClaudeCode(AggregationTemporality.CUMULATIVE, **{"session.id": unique("s"), "terminal.type": "vscode"})
    code.add("session.count", 1)
    code.add("commit.count", 2)
    export(OTLPMetricExporter(endpoint=server.base_url + "/v1/metrics", headers={"x-api-key": team.token}),
           code.collect())  # fmt: skip
    code.add("commit.count", 1)  # cumulative: 3 in all
    later = issue(server, team.user["id"], team.workspace["id"])  # the CLI refreshed its token
    export(OTLPMetricExporter(endpoint=server.base_url + "/v1/metrics", headers={"authorization": f"Bearer {later}"}),
           code.collect())  # fmt: skip
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    with server.http() as http:
        report = http.get("/v1/organizations/usage_report/claude_code", params={"starting_at": today}).json()
    mine = [r for r in report["data"] if r["actor"].get("email_address") == team.user["email"]]
    assert len(mine) == 1, report
    assert mine[0]["actor"] == {"type": "user_actor", "email_address": team.user["email"]}
    assert mine[0]["core_metrics"]["commits_by_claude_code"] == 3
    assert mine[0]["core_metrics"]["num_sessions"] == 1
