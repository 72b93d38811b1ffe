"""The permission table and the one policy function (issue 16 §2), without I/O."""

from __future__ import annotations

import pytest

from orgwarden.domain.policy import ORG_GRANTS, WORKSPACE_GRANTS, Actor, Permission, allows, may_use
from orgwarden.domain.roles import ORG_ROLES, WORKSPACE_ROLES, effective_workspace_role

P = Permission


def user(org_role: str) -> Actor:
    return Actor("user", "utok_1", "org_1", "user_1", org_role)


def test_every_role_has_a_row_in_the_table() -> None:
    assert set(ORG_GRANTS) == ORG_ROLES
    assert set(WORKSPACE_GRANTS) == WORKSPACE_ROLES


def test_an_organization_admin_may_do_everything() -> None:
    assert all(allows(user("admin"), p) for p in Permission)


@pytest.mark.parametrize("org_role", ["user", "claude_code_user"])
def test_user_and_claude_code_user_manage_nothing(org_role: str) -> None:
    writes = [p for p in Permission if not p.value.endswith(":read")]
    assert not any(allows(user(org_role), p) for p in writes)
    assert not allows(user(org_role), P.API_KEYS_READ)
    assert not allows(user(org_role), P.USAGE_READ)
    assert allows(user(org_role), P.TUNNELS_READ)  # "can view MCP tunnels"


def test_billing_reads_cost_and_usage_and_manages_spend_limits_only() -> None:
    billing = user("billing")
    assert allows(billing, P.USAGE_READ)
    assert allows(billing, P.SPEND_LIMITS_WRITE)
    assert allows(billing, P.SPEND_LIMITS_READ)
    for p in (P.API_KEYS_WRITE, P.USERS_WRITE, P.MEMBERS_WRITE, P.WORKSPACES_WRITE, P.RATE_LIMITS_WRITE):
        assert not allows(billing, p)


def test_a_developer_manages_keys_only_where_workspace_developer_or_above() -> None:
    dev = user("developer")
    assert not allows(dev, P.API_KEYS_WRITE)
    assert may_use(dev, P.API_KEYS_WRITE)  # in some workspace, checked by the service
    for role, expected in [
        (None, False),
        ("workspace_user", False),
        ("workspace_restricted_developer", False),
        ("workspace_developer", True),
        ("workspace_admin", True),
    ]:
        assert allows(dev, P.API_KEYS_WRITE, role) is expected, role


def test_a_workspace_admin_manages_that_workspaces_members_and_keys() -> None:
    someone = user("user")
    for p in (P.MEMBERS_WRITE, P.API_KEYS_WRITE, P.WORKSPACES_WRITE, P.RATE_LIMITS_WRITE):
        assert allows(someone, p, "workspace_admin")
        assert not allows(someone, p)
    assert not allows(someone, P.WORKSPACES_ARCHIVE, "workspace_admin")
    assert not allows(someone, P.SPEND_LIMITS_WRITE, "workspace_admin")


@pytest.mark.parametrize("permission", [P.AUDIT_READ, P.INVITES_WRITE, P.USERS_WRITE, P.WORKSPACES_CREATE])
def test_organization_only_routes_are_closed_to_non_admins_in_every_workspace(permission: Permission) -> None:
    for role in ORG_ROLES - {"admin"}:
        assert not may_use(user(role), permission)


def test_keys_and_tokens_without_a_role_are_refused() -> None:
    assert not allows(Actor("user", "t", "o", "u", None), P.ORGANIZATION_READ)
    assert not allows(Actor("user", "t", "o", "u", "nonsense"), P.ORGANIZATION_READ)
    assert not may_use(Actor("api_key", "k", "o"), P.API_KEYS_WRITE)


@pytest.mark.parametrize(
    ("org_role", "expected"),
    [
        ("admin", "workspace_admin"),
        ("developer", "workspace_developer"),
        ("billing", "workspace_billing"),
        ("user", "workspace_user"),
        ("claude_code_user", "workspace_user"),
    ],
)
def test_the_organization_role_is_the_baseline_in_the_default_workspace(org_role: str, expected: str) -> None:
    assert effective_workspace_role(org_role, None, is_default=True) == expected
    assert effective_workspace_role(org_role, "workspace_admin", is_default=True) == "workspace_admin"
