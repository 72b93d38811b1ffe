"""The permission table, proven: every Admin API route x every organization role x the workspace roles.

A real ``orgwarden serve`` per backend (SQLite and PostgreSQL). One user per (organization role,
workspace role in the workspace under test) is invited, accepts, is added to that workspace, and gets
an access token minted by ``UserTokenService.issue`` on the server's own database (the device flow that
normally hands it out is the signin tests'). Each route is then called with each user's token as
``Authorization: Bearer`` and the status compared with ``CASES``, which is the README's table written as
data. A route registered without a row in ``CASES`` fails the test (``test_every_route_has_a_row``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import orgwarden.api.app  # noqa: F401 - registers every route
from orgwarden.api.routing import REGISTERED
from orgwarden.domain.roles import ASSIGNABLE_ORG_ROLES, DEFAULT_WORKSPACE_ROLE
from orgwarden.services.rbac_groups import role_id
from tests.conftest import BACKENDS, TLS, Server, dedicated_server, unique
from tests.tunnels import certs

NON_ADMIN = sorted(ASSIGNABLE_ORG_ROLES)  # billing, claude_code_user, developer, user
WS_ROLES: list[str | None] = [
    None,
    "workspace_user",
    "workspace_restricted_developer",
    "workspace_developer",
    "workspace_admin",
]
KEY_READERS = frozenset({"workspace_restricted_developer", "workspace_developer", "workspace_admin"})
EVERYONE = frozenset({"admin", *ASSIGNABLE_ORG_ROLES})
ANY_MEMBER = frozenset(r for r in WS_ROLES if r is not None)
SPEC_BETA = {"anthropic-beta": "mcp-tunnels-2026-05-19"}
SDK_BETA = {"anthropic-beta": "mcp-tunnels-2026-06-22"}


@dataclass(frozen=True)
class Who:
    """A caller: an organization role and a role in the workspace under test (``None``: not a member)."""

    org_role: str
    ws_role: str | None
    token: str = field(compare=False, repr=False)
    user_id: str = field(compare=False, repr=False)

    @property
    def effective(self) -> str | None:
        """Written out here rather than imported, so that the test states the rule it checks."""
        if self.org_role == "admin":
            return "workspace_admin"
        return self.ws_role or ("workspace_billing" if self.org_role == "billing" else None)


@dataclass(frozen=True)
class Call:
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Case:
    """One route and who may use it.

    ``org``: organization roles that may, whatever their workspace role (admin always may).
    ``ws``: effective workspace roles that may, in the workspace the call names.
    ``scope``: ``org`` (nothing but the organization role counts: others get 403), ``ws`` (the
    workspace under test: a workspace they cannot see is 404, one they see is 403) or ``key`` (an API
    key in it: a key they cannot read is 404, one they read but may not change is 403).
    """

    method: str
    route: str
    call: Callable[[Fixture, Who], Call]
    org: frozenset[str] = frozenset({"admin"})
    ws: frozenset[str] = frozenset()
    scope: str = "org"
    label: str = ""
    allowed: int = 200  # what a caller who may use the route gets (404: a path orgwarden has no data for)

    def expected(self, who: Who) -> int:
        if who.org_role in self.org | {"admin"}:
            return self.allowed
        if self.scope == "org" or not self.ws:
            return 403
        if who.effective in self.ws:
            return 200
        if self.scope == "ws":
            return 403 if who.effective is not None else 404
        return 403 if who.effective in KEY_READERS else 404


@dataclass
class Fixture:
    """What the cases act on, made with the admin key."""

    server: Server
    admin: httpx.Client
    workspace: str
    api_key: str
    rate_limit: str
    victim: str
    invite: str
    spend_limit: str
    tunnel: str
    certificate: str
    group: str = ""
    placeholders: bool = False  # a call refused before any look-up needs no fresh resource

    def _fresh(self, prefix: str, make: Callable[[], str]) -> str:
        return f"{prefix}_0000placeholder" if self.placeholders else make()

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.admin.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def new_invite(self) -> str:
        return self._fresh("invite", lambda: str(self.post(f"{ORG}/invites", _invite_body())["id"]))

    def new_spend_limit(self) -> str:
        scope = {"type": "api_key", "api_key_id": self.api_key}
        return self._fresh("spl", lambda: str(self.post(f"{ORG}/spend_limits", {"amount": "1", "scope": scope})["id"]))

    def new_user(self, role: str = "user") -> str:
        return self._fresh("user", lambda: self._new_user(role))

    def _new_user(self, role: str) -> str:
        invite = self.post("/v1/organizations/invites", {"email": f"{unique('u')}@acme.test", "role": role})
        token = invite["accept_url"].split("#token=", 1)[1]
        accepted = httpx.post(
            f"{self.server.base_url}/v1/invites/accept", json={"token": token, "name": "Someone"}, verify=TLS
        )
        assert accepted.status_code == 200, accepted.text
        return str(accepted.json()["id"])

    def new_member(self) -> str:
        user_id = self.new_user()
        self.post(
            f"/v1/organizations/workspaces/{self.workspace}/members",
            {"user_id": user_id, "workspace_role": "workspace_user"},
        )
        return user_id

    def new_workspace(self) -> str:
        return self._fresh("wrkspc", self._new_workspace)

    def _new_workspace(self) -> str:
        return str(self.post("/v1/organizations/workspaces", {"name": unique("ws")})["id"])

    def new_tunnel(self) -> str:
        return self._fresh("tnl", self._new_tunnel)

    def _new_tunnel(self) -> str:
        return str(self.post("/v1/tunnels", {"display_name": unique("t")}, SDK_BETA)["id"])

    def new_certificate(self, tunnel: str | None = None) -> str:
        """A certificate on ``tunnel`` (a tunnel holds at most two)."""
        path = f"/v1/tunnels/{tunnel or self.tunnel}/certificates"
        return str(self.post(path, {"ca_certificate_pem": certs.make().pem}, SDK_BETA)["id"])

    def new_group(self) -> str:
        return self._fresh("rbgrp", lambda: str(self.post(f"{ORG}/rbac_groups", {"name": unique("g")})["id"]))

    def group_with_settings(self) -> str:
        """A fresh group with Claude Code managed settings."""
        if self.placeholders:
            return "rbgrp_0000placeholder"
        group = self.new_group()
        self.post(f"{CCMS}/rbac_groups/{group}", {"settings": {}})
        return group

    def group_with_member(self) -> str:
        """``{group}/members/{user}``: a fresh group with a fresh member."""
        if self.placeholders:
            return "rbgrp_0000placeholder/members/user_0000placeholder"
        group, user = self.new_group(), self.new_user()
        self.post(f"{ORG}/rbac_groups/{group}/members", {"user_id": user})
        return f"{group}/members/{user}"

    def tunnel_with_certificate(self) -> str:
        if self.placeholders:
            return "tnl_0000placeholder/certificates/tcrt_0000placeholder"
        tunnel = self.new_tunnel()
        return f"{tunnel}/certificates/{self.new_certificate(tunnel)}"


def _invite_body() -> dict[str, str]:
    return {"email": f"{unique()}@acme.test", "role": "user"}


def _o(path: str, **kw: Any) -> Callable[[Fixture, Who], Call]:
    """A call whose path names nothing made for it."""
    return lambda fx, who: Call(path.format(ws=fx.workspace, key=fx.api_key, rl=fx.rate_limit), **kw)


ORG = "/v1/organizations"
ROLE = role_id("developer")  # an RBAC role id: the organization role developer
WS = f"{ORG}/workspaces/{{ws}}"
RL_BODY = {"limits": [{"type": "requests_per_minute", "value": 5000}]}
DAY = {"starting_at": "2026-01-01T00:00:00Z"}
MEMBER_READERS = frozenset({"workspace_developer", "workspace_admin"})
WS_ADMIN = frozenset({"workspace_admin"})
KEY_WRITERS = frozenset({"workspace_developer", "workspace_admin"})
RL_READERS = KEY_READERS | {"workspace_billing"}
USAGE = frozenset({"billing", "developer"})
BILLING = frozenset({"billing"})


def _tunnel_cases(prefix: str, beta: dict[str, str]) -> list[Case]:
    one = prefix + "/{tunnel_id}"
    cert = one + "/certificates"
    h = {"headers": beta}
    return [
        Case("GET", prefix, lambda fx, w: Call(prefix, **h), org=EVERYONE),
        Case("POST", prefix, lambda fx, w: Call(prefix, json={"display_name": unique("t")}, **h)),
        Case("GET", one, lambda fx, w: Call(f"{prefix}/{fx.tunnel}", **h), org=EVERYONE),
        Case("POST", one + "/reveal_token", lambda fx, w: Call(f"{prefix}/{fx.tunnel}/reveal_token", json={}, **h)),
        Case("POST", one + "/rotate_token", lambda fx, w: Call(f"{prefix}/{fx.tunnel}/rotate_token", json={}, **h)),
        Case("POST", one + "/archive", lambda fx, w: Call(f"{prefix}/{fx.new_tunnel()}/archive", json={}, **h)),
        Case(
            "POST",
            cert,
            lambda fx, w: Call(
                f"{prefix}/{fx.new_tunnel()}/certificates", json={"ca_certificate_pem": certs.make().pem}, **h
            ),
        ),
        Case("GET", cert, lambda fx, w: Call(f"{prefix}/{fx.tunnel}/certificates", **h), org=EVERYONE),
        Case(
            "GET",
            cert + "/{certificate_id}",
            lambda fx, w: Call(f"{prefix}/{fx.tunnel}/certificates/{fx.certificate}", **h),
            org=EVERYONE,
        ),
        Case(
            "POST",
            cert + "/{certificate_id}/archive",
            lambda fx, w: Call(f"{prefix}/{fx.tunnel_with_certificate()}/archive", json={}, **h),
        ),
    ]


CCMS = f"{ORG}/claude_code/managed_settings"

CASES: list[Case] = [
    # Claude Code policies (managed settings and model access): organization admins only
    Case("GET", f"{CCMS}/configuration", _o(f"{CCMS}/configuration")),
    Case("POST", f"{CCMS}/configuration", _o(f"{CCMS}/configuration", json={"mode": {"type": "rbac_groups"}})),
    Case("GET", f"{CCMS}/rbac_group_default", _o(f"{CCMS}/rbac_group_default")),
    Case("POST", f"{CCMS}/rbac_group_default", _o(f"{CCMS}/rbac_group_default", json={"settings": {}})),
    Case("GET", f"{CCMS}/rbac_groups", _o(f"{CCMS}/rbac_groups")),
    Case(
        "GET",
        f"{CCMS}/rbac_groups/{{rbac_group_id}}",
        lambda fx, w: Call(f"{CCMS}/rbac_groups/{fx.group_with_settings()}"),
    ),
    Case(
        "POST",
        f"{CCMS}/rbac_groups/{{rbac_group_id}}",
        lambda fx, w: Call(f"{CCMS}/rbac_groups/{fx.new_group()}", json={"settings": {}}),
    ),
    Case(
        "DELETE",
        f"{CCMS}/rbac_groups/{{rbac_group_id}}",
        lambda fx, w: Call(f"{CCMS}/rbac_groups/{fx.group_with_settings()}"),
    ),
    Case("GET", f"{ORG}/me", _o(f"{ORG}/me"), org=EVERYONE),
    # orgwarden's settings of the organization: every member may read them, only admins change them
    Case("GET", f"{ORG}/me/settings", _o(f"{ORG}/me/settings"), org=EVERYONE),
    Case("POST", f"{ORG}/me/settings", _o(f"{ORG}/me/settings", json={"offboarding_key_policy": "deactivate"})),
    # RBAC groups and roles: read like the user directory (users:read), changed by admins (users:write)
    Case("GET", f"{ORG}/rbac_groups", _o(f"{ORG}/rbac_groups"), org=EVERYONE),
    Case("POST", f"{ORG}/rbac_groups", lambda fx, w: Call(f"{ORG}/rbac_groups", json={"name": unique("g")})),
    Case(
        "GET", f"{ORG}/rbac_groups/{{rbac_group_id}}", lambda fx, w: Call(f"{ORG}/rbac_groups/{fx.group}"), org=EVERYONE
    ),
    Case(
        "POST",
        f"{ORG}/rbac_groups/{{rbac_group_id}}",
        lambda fx, w: Call(f"{ORG}/rbac_groups/{fx.group}", json={"name": unique("g")}),
    ),
    Case("DELETE", f"{ORG}/rbac_groups/{{rbac_group_id}}", lambda fx, w: Call(f"{ORG}/rbac_groups/{fx.new_group()}")),
    Case(
        "GET",
        f"{ORG}/rbac_groups/{{rbac_group_id}}/members",
        lambda fx, w: Call(f"{ORG}/rbac_groups/{fx.group}/members"),
        org=EVERYONE,
    ),
    Case(
        "POST",
        f"{ORG}/rbac_groups/{{rbac_group_id}}/members",
        lambda fx, w: Call(f"{ORG}/rbac_groups/{fx.new_group()}/members", json={"user_id": fx.new_user()}),
    ),
    Case(
        "DELETE",
        f"{ORG}/rbac_groups/{{rbac_group_id}}/members/{{user_id}}",
        lambda fx, w: Call(f"{ORG}/rbac_groups/{fx.group_with_member()}"),
    ),
    Case("GET", f"{ORG}/rbac_roles", _o(f"{ORG}/rbac_roles"), org=EVERYONE),
    Case("GET", f"{ORG}/rbac_roles/{{rbac_role_id}}", _o(f"{ORG}/rbac_roles/{ROLE}"), org=EVERYONE),
    Case(
        "GET",
        f"{ORG}/rbac_roles/{{rbac_role_id}}/permissions",
        _o(f"{ORG}/rbac_roles/{ROLE}/permissions"),
        org=EVERYONE,
    ),
    # users: the directory is every member's to read; changing it is the admins'
    Case("GET", f"{ORG}/users", _o(f"{ORG}/users"), org=EVERYONE),
    Case("GET", f"{ORG}/users/{{user_id}}", lambda fx, w: Call(f"{ORG}/users/{fx.victim}"), org=EVERYONE),
    Case("POST", f"{ORG}/users/{{user_id}}", lambda fx, w: Call(f"{ORG}/users/{fx.victim}", json={"role": "user"})),
    Case("DELETE", f"{ORG}/users/{{user_id}}", lambda fx, w: Call(f"{ORG}/users/{fx.new_user()}")),
    # invites
    Case("GET", f"{ORG}/invites", _o(f"{ORG}/invites")),
    Case(
        "POST",
        f"{ORG}/invites",
        lambda fx, w: Call(f"{ORG}/invites", json={"email": f"{unique()}@acme.test", "role": "user"}),
    ),
    Case("GET", f"{ORG}/invites/{{invite_id}}", lambda fx, w: Call(f"{ORG}/invites/{fx.invite}")),
    Case(
        "DELETE",
        f"{ORG}/invites/{{invite_id}}",
        lambda fx, w: Call(f"{ORG}/invites/{fx.new_invite()}"),
    ),
    # workspaces
    Case("GET", f"{ORG}/workspaces", _o(f"{ORG}/workspaces"), org=EVERYONE),  # filtered: see the list test
    Case("POST", f"{ORG}/workspaces", lambda fx, w: Call(f"{ORG}/workspaces", json={"name": unique("ws")})),
    Case("GET", f"{ORG}/workspaces/{{workspace_id}}", _o(WS), org=BILLING, ws=ANY_MEMBER, scope="ws"),
    Case("POST", f"{ORG}/workspaces/{{workspace_id}}", _o(WS, json={"tags": {"team": "x"}}), ws=WS_ADMIN, scope="ws"),
    Case(
        "POST",
        f"{ORG}/workspaces/{{workspace_id}}/archive",
        lambda fx, w: Call(f"{ORG}/workspaces/{fx.new_workspace()}/archive", json={}),
    ),
    Case(
        "POST",
        f"{ORG}/workspaces/{{workspace_id}}/upstream_key",
        _o(WS + "/upstream_key", json={"api_key": "sk-x"}),
        ws=WS_ADMIN,
        scope="ws",
    ),
    Case(
        "DELETE", f"{ORG}/workspaces/{{workspace_id}}/upstream_key", _o(WS + "/upstream_key"), ws=WS_ADMIN, scope="ws"
    ),
    # members
    Case("GET", f"{ORG}/workspaces/{{workspace_id}}/members", _o(WS + "/members"), ws=MEMBER_READERS, scope="ws"),
    Case(
        "POST",
        f"{ORG}/workspaces/{{workspace_id}}/members",
        lambda fx, w: Call(
            f"{ORG}/workspaces/{fx.workspace}/members",
            json={"user_id": fx.new_user(), "workspace_role": "workspace_user"},
        ),
        ws=WS_ADMIN,
        scope="ws",
    ),
    Case(
        "GET",
        f"{ORG}/workspaces/{{workspace_id}}/members/{{user_id}}",
        lambda fx, w: Call(f"{ORG}/workspaces/{fx.workspace}/members/{fx.victim}"),
        ws=MEMBER_READERS,
        scope="ws",
    ),
    Case(
        "POST",
        f"{ORG}/workspaces/{{workspace_id}}/members/{{user_id}}",
        lambda fx, w: Call(
            f"{ORG}/workspaces/{fx.workspace}/members/{fx.victim}", json={"workspace_role": "workspace_user"}
        ),
        ws=WS_ADMIN,
        scope="ws",
    ),
    Case(
        "DELETE",
        f"{ORG}/workspaces/{{workspace_id}}/members/{{user_id}}",
        lambda fx, w: Call(f"{ORG}/workspaces/{fx.workspace}/members/{fx.new_member()}"),
        ws=WS_ADMIN,
        scope="ws",
    ),
    # API keys
    Case("GET", f"{ORG}/api_keys", _o(f"{ORG}/api_keys"), org=EVERYONE),  # filtered: see the list test
    Case(
        "POST",
        f"{ORG}/api_keys",
        lambda fx, w: Call(f"{ORG}/api_keys", json={"name": unique("k"), "workspace_id": fx.workspace}),
        ws=KEY_WRITERS,
        scope="ws",
    ),
    Case(
        "POST",
        f"{ORG}/api_keys",
        lambda fx, w: Call(f"{ORG}/api_keys", json={"name": unique("k")}),
        org=frozenset({"developer"}),
        label="in the default workspace",
    ),
    Case("GET", f"{ORG}/api_keys/{{api_key_id}}", _o(f"{ORG}/api_keys/{{key}}"), ws=KEY_READERS, scope="key"),
    Case(
        "POST",
        f"{ORG}/api_keys/{{api_key_id}}",
        _o(f"{ORG}/api_keys/{{key}}", json={"name": "renamed"}),
        ws=KEY_WRITERS,
        scope="key",
    ),
    # rate limits
    Case("GET", f"{ORG}/rate_limits", _o(f"{ORG}/rate_limits"), org=USAGE),
    Case("POST", f"{ORG}/rate_limits/{{rate_limit_id}}", _o(f"{ORG}/rate_limits/{{rl}}", json=RL_BODY)),
    Case(
        "GET",
        f"{ORG}/workspaces/{{workspace_id}}/rate_limits",
        _o(WS + "/rate_limits"),
        org=USAGE,
        ws=RL_READERS,
        scope="ws",
    ),
    Case(
        "POST",
        f"{ORG}/workspaces/{{workspace_id}}/rate_limits/{{rate_limit_id}}",
        _o(WS + "/rate_limits/{rl}", json=RL_BODY),
        ws=WS_ADMIN,
        scope="ws",
    ),
    Case(
        "GET",
        f"{ORG}/api_keys/{{api_key_id}}/rate_limits",
        _o(f"{ORG}/api_keys/{{key}}/rate_limits"),
        ws=KEY_READERS,
        scope="key",
    ),
    Case(
        "POST",
        f"{ORG}/api_keys/{{api_key_id}}/rate_limits/{{rate_limit_id}}",
        _o(f"{ORG}/api_keys/{{key}}/rate_limits/{{rl}}", json=RL_BODY),
        ws=WS_ADMIN,
        scope="key",
    ),
    # spend limits: billing's
    Case("GET", f"{ORG}/spend_limits", _o(f"{ORG}/spend_limits"), org=BILLING),
    Case(
        "POST",
        f"{ORG}/spend_limits",
        lambda fx, w: Call(
            f"{ORG}/spend_limits",
            json={"amount": "100000", "scope": {"type": "workspace", "workspace_id": fx.workspace}},
        ),
        org=BILLING,
    ),
    Case("GET", f"{ORG}/spend_limits/effective", _o(f"{ORG}/spend_limits/effective"), org=BILLING),
    Case(
        "GET",
        f"{ORG}/spend_limits/{{spend_limit_id}}",
        lambda fx, w: Call(f"{ORG}/spend_limits/{fx.spend_limit}"),
        org=BILLING,
    ),
    Case(
        "DELETE",
        f"{ORG}/spend_limits/{{spend_limit_id}}",
        lambda fx, w: Call(f"{ORG}/spend_limits/{fx.new_spend_limit()}"),
        org=BILLING,
    ),
    # usage and cost
    Case("GET", f"{ORG}/usage_report/messages", _o(f"{ORG}/usage_report/messages", params=DAY), org=USAGE),
    Case("GET", f"{ORG}/cost_report", _o(f"{ORG}/cost_report", params=DAY), org=USAGE),
    Case(
        "GET",
        f"{ORG}/usage_report/claude_code",
        _o(f"{ORG}/usage_report/claude_code", params={"starting_at": "2026-01-01"}),
        org=USAGE,
    ),
    # the SDK's analytics (paths about claude.ai data orgwarden does not record: 404 for those allowed)
    *(
        Case("GET", f"{ORG}/analytics/{path}", _o(f"{ORG}/analytics/{path}", params=params), org=USAGE)
        for path, params in (
            ("usage_report", DAY),
            ("cost_report", DAY),
            ("usage", DAY),
            ("cost", DAY),
            ("user_usage_report", DAY),
            ("user_cost_report", DAY),
            ("summaries", {"starting_date": "2026-01-01", "ending_date": "2026-01-02"}),
            ("users", {"date": "2026-01-01"}),
        )
    ),
    *(
        Case("GET", f"{ORG}/analytics/{path}", _o(f"{ORG}/analytics/{path}"), org=USAGE, allowed=404)
        for path in ("apps/chat/projects", "artifacts", "connectors", "plugins", "skills", "projects")
    ),
    # audit
    Case("GET", f"{ORG}/audit_logs", _o(f"{ORG}/audit_logs")),
    # MCP tunnels: every role views them, admins create and change them
    *_tunnel_cases(f"{ORG}/tunnels", SPEC_BETA),
    *_tunnel_cases("/v1/tunnels", SDK_BETA),
    Case(
        "POST",
        f"{ORG}/tunnels/check_token",
        lambda fx, w: Call(f"{ORG}/tunnels/check_token", json={"tunnel_token": "not-a-token"}, headers=SPEC_BETA),
        org=EVERYONE,
    ),
]


def test_every_route_has_a_row() -> None:
    """A route added without a row here (and in the README's table) fails."""
    covered = {(case.method, case.route) for case in CASES}
    missing = sorted(set(REGISTERED) - covered)
    assert not missing, f"Admin API routes without a row in the role table: {missing}"
    assert not covered - set(REGISTERED), sorted(covered - set(REGISTERED))


def test_the_default_workspace_baseline_is_the_tables() -> None:
    """The single ``POST /api_keys`` row for the default workspace assumes these baselines."""
    assert DEFAULT_WORKSPACE_ROLE["developer"] == "workspace_developer"
    assert {DEFAULT_WORKSPACE_ROLE[r] for r in ("user", "claude_code_user", "billing")} == {
        "workspace_user", "workspace_billing",
    }  # fmt: skip


# -- the walk ------------------------------------------------------------------------------------------


def mint(server: Server, org_id: str, user_ids: list[str]) -> list[str]:
    """Access tokens for ``user_ids``, issued on the server's database as the device flow would."""
    from orgwarden.config import load_settings
    from orgwarden.services.user_tokens import UserTokenService
    from orgwarden.storage.engine import create_engine, session_factory
    from orgwarden.storage.uow import UnitOfWorkFactory

    async def run() -> list[str]:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        try:
            service = UserTokenService(UnitOfWorkFactory(session_factory(engine)), 3600, 86400)
            tokens = []
            for user_id in user_ids:
                issued = await service.issue(
                    organization_id=org_id, user_id=user_id, workspace_id=None, client_id="roles-test", scope="user"
                )
                tokens.append(issued.access_token)
            return tokens
        finally:
            await engine.dispose()

    return asyncio.run(run())


@dataclass
class World:
    server: Server
    fx: Fixture
    people: list[Who]
    client: httpx.Client


def build(server: Server) -> World:
    admin = server.http()
    fx = Fixture(server, admin, "", "", "", "", "", "", "", "")
    fx.workspace = fx.new_workspace()
    fx.api_key = fx.post(f"{ORG}/api_keys", {"name": "shared", "workspace_id": fx.workspace})["id"]
    listing = admin.get(f"{ORG}/rate_limits").json()
    fx.rate_limit = listing["data"][0]["id"]
    fx.victim = fx.new_member()
    fx.invite = fx.post(f"{ORG}/invites", {"email": f"{unique()}@acme.test", "role": "user"})["id"]
    fx.spend_limit = fx.post(f"{ORG}/spend_limits", {"amount": "5000", "scope": {"type": "organization"}})["id"]
    fx.tunnel = fx.new_tunnel()
    fx.certificate = fx.new_certificate()
    fx.group = fx.new_group()
    roles: list[tuple[str, str | None, str]] = [("admin", None, server.user["id"])]
    for org_role, ws_role in itertools.product(NON_ADMIN, WS_ROLES):
        user_id = fx.new_user(org_role)
        if ws_role is not None:
            fx.post(f"{WS}/members".format(ws=fx.workspace), {"user_id": user_id, "workspace_role": ws_role})
        roles.append((org_role, ws_role, user_id))
    tokens = mint(server, server.organization["id"], [user_id for _, _, user_id in roles])
    people = [
        Who(org_role, ws_role, token, user_id)
        for (org_role, ws_role, user_id), token in zip(roles, tokens, strict=True)
    ]
    return World(server, fx, people, httpx.Client(base_url=server.base_url, timeout=30, verify=TLS))


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    with dedicated_server(request.param, {}) as server:
        world = build(server)
        try:
            yield world
        finally:
            world.client.close()
            world.fx.admin.close()


def send(world: World, case: Case, who: Who | None) -> httpx.Response:
    """``case``'s call as ``who`` (``None``: the admin key). A call the guard refuses whatever it names
    (an organization-scoped row the caller may not use) names placeholders instead of fresh resources."""
    world.fx.placeholders = who is not None and case.scope == "org" and case.expected(who) == 403
    try:
        call = case.call(world.fx, who or Who("admin", None, "", ""))
    finally:
        world.fx.placeholders = False
    auth = {"authorization": f"Bearer {who.token}"} if who is not None else {"x-api-key": world.server.admin_key}
    headers = {"anthropic-version": "2023-06-01", **auth, **(call.headers or {})}
    return world.client.request(case.method, call.path, json=call.json, params=call.params, headers=headers)


def callers(world: World, case: Case) -> list[Who]:
    """Everybody for workspace-scoped rows; for organization rows, one non-member and one workspace
    admin per role (a workspace role must not open an organization-only route)."""
    if case.scope != "org":
        return world.people
    return [w for w in world.people if w.ws_role in (None, "workspace_admin")]


def test_every_route_answers_every_role_as_the_table_says(world: World) -> None:
    wrong = []
    for case in CASES:
        admin_key = send(world, case, None)
        if admin_key.status_code != case.allowed:
            got = f"{admin_key.status_code} {admin_key.text[:200]}"
            wrong.append(f"{case.method} {case.route} {case.label} with the admin key: {got}")
        for who in callers(world, case):
            response = send(world, case, who)
            expected = case.expected(who)
            if response.status_code != expected:
                wrong.append(
                    f"{case.method} {case.route} {case.label} as {who.org_role}/{who.ws_role}: "
                    f"{response.status_code}, expected {expected}: {response.text[:200]}"
                )
            elif expected == 403:
                assert response.json()["error"]["type"] == "permission_error"
            elif expected == 404:
                assert response.json()["error"]["type"] == "not_found_error"
    assert not wrong, "\n".join(wrong)


def test_lists_show_only_what_the_role_can_see(world: World) -> None:
    fx = world.fx
    for who in world.people:
        headers = {"authorization": f"Bearer {who.token}"}
        keys = httpx.get(
            f"{world.server.base_url}{ORG}/api_keys", params={"limit": 1000}, headers=headers, verify=TLS
        ).json()
        sees_key = any(k["id"] == fx.api_key for k in keys["data"])
        assert sees_key is (who.org_role == "admin" or who.effective in KEY_READERS), who
        assert all(k["workspace_id"] in (fx.workspace, None) for k in keys["data"]) or who.org_role == "admin", who
        spaces = httpx.get(
            f"{world.server.base_url}{ORG}/workspaces", params={"limit": 1000}, headers=headers, verify=TLS
        ).json()
        sees_workspace = any(w["id"] == fx.workspace for w in spaces["data"])
        assert sees_workspace is (who.org_role in ("admin", "billing") or who.ws_role is not None), who


def test_a_refusal_is_audited_with_the_user(world: World) -> None:
    someone = next(w for w in world.people if w.org_role == "user" and w.ws_role is None)
    response = send(world, next(c for c in CASES if c.route == f"{ORG}/audit_logs"), someone)
    assert response.status_code == 403
    assert "(user)" in response.json()["error"]["message"]
    audit = world.fx.admin.get(f"{ORG}/audit_logs", params={"action": "authorization.check", "limit": 1000}).json()
    mine = [e for e in audit["data"] if e["actor_user_id"] == someone.user_id]
    assert mine
    assert mine[0]["actor_type"] == "user"
    assert mine[0]["outcome"] == "denied"


def test_a_role_change_applies_to_the_next_request(world: World) -> None:
    """The token look-up is cached; a role change is announced and dropped within a poll interval."""
    who = next(w for w in world.people if w.org_role == "user" and w.ws_role is None)
    url = f"{world.server.base_url}{ORG}/cost_report"
    headers = {"authorization": f"Bearer {who.token}"}
    assert httpx.get(url, params=DAY, headers=headers, verify=TLS).status_code == 403
    world.fx.post(f"{ORG}/users/{who.user_id}", {"role": "billing"})
    try:
        assert _eventually(lambda: httpx.get(url, params=DAY, headers=headers, verify=TLS).status_code == 200)
    finally:
        world.fx.post(f"{ORG}/users/{who.user_id}", {"role": "user"})
    assert _eventually(lambda: httpx.get(url, params=DAY, headers=headers, verify=TLS).status_code == 403)


def _eventually(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_token_works_as_x_api_key_and_an_unknown_one_is_401(world: World) -> None:
    who = next(w for w in world.people if w.org_role == "developer" and w.ws_role is None)
    me = world.client.get(f"{ORG}/me", headers={"x-api-key": who.token})
    assert me.status_code == 200, me.text
    for bad in (who.token[:-4] + "AAAA", "ow-at01-" + "x" * 500):
        refused = world.client.get(f"{ORG}/me", headers={"authorization": f"Bearer {bad}"})
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "authentication_error"
        assert "invalid access token" in refused.json()["error"]["message"]
