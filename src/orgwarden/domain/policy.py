"""Who may do what: one policy function, one list of permissions, one permission table.

Every Admin API route declares the permission it needs (``api.routing.admin_route`` refuses to register
one that does not). Admin keys, the CLI and the system may do everything in their organization; a
regular API key may do nothing here (403). A signed-in user (``kind="user"``, a user access token)
holds the union of what their organization role grants everywhere (``ORG_GRANTS``) and what their
workspace role grants in one workspace (``WORKSPACE_GRANTS``), the latter only where the workspace is
known (the service layer asks with ``workspace_role``). The tables follow Anthropic's published
role definitions (Claude Console roles and permissions; the Admin API's workspace roles); where those
are silent the README ("Roles and permissions") says what was decided and why.

Answers the API gives from these (``api.routing`` and ``services.access``):
* ``may_use`` false: the route is never open to this actor, whatever workspace: 403 ``permission_error``;
* a workspace (or a resource in one) the actor may not read: 404, as if it did not exist;
* one they may read but not change: 403.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

ActorKind = Literal["admin_api_key", "api_key", "cli", "invite_token", "system", "user", "scim_token"]

ALL_POWERFUL: Final = frozenset({"admin_api_key", "cli", "system"})


class Permission(enum.Enum):
    ORGANIZATION_READ = "organization:read"
    ORGANIZATION_WRITE = "organization:write"  # the organization's settings (offboarding_key_policy)
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    INVITES_READ = "invites:read"
    INVITES_WRITE = "invites:write"
    WORKSPACES_READ = "workspaces:read"
    WORKSPACES_CREATE = "workspaces:create"  # a new workspace: organization admins only
    WORKSPACES_WRITE = "workspaces:write"  # settings and upstream key of one workspace
    WORKSPACES_ARCHIVE = "workspaces:archive"  # revokes every key of the workspace: organization admins
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_WRITE = "api_keys:write"
    RATE_LIMITS_READ = "rate_limits:read"
    RATE_LIMITS_WRITE = "rate_limits:write"
    SPEND_LIMITS_READ = "spend_limits:read"
    SPEND_LIMITS_WRITE = "spend_limits:write"
    USAGE_READ = "usage:read"  # usage, cost and Claude Code reports
    AUDIT_READ = "audit:read"  # the audit log; nothing may write it but the use cases themselves
    TUNNELS_READ = "tunnels:read"
    TUNNELS_WRITE = "tunnels:write"  # also reveal: it hands out a credential
    CLAUDE_CODE_SETTINGS_READ = "claude_code_managed_settings:read"  # policies: settings and models
    CLAUDE_CODE_SETTINGS_WRITE = "claude_code_managed_settings:write"


P = Permission

# What each organization role grants in the whole organization (every workspace included).
ORG_GRANTS: Final[Mapping[str, frozenset[Permission]]] = {
    # "Can only use the playground; can view MCP tunnels": reading who is in the organization is
    # not managing it (decided: the directory is visible to every member).
    "user": frozenset({P.ORGANIZATION_READ, P.USERS_READ, P.TUNNELS_READ}),
    "claude_code_user": frozenset({P.ORGANIZATION_READ, P.USERS_READ, P.TUNNELS_READ}),
    # "Can manage API keys; can view usage and cost data": keys only where their workspace role
    # allows (WORKSPACE_GRANTS); usage, cost and rate limits organization-wide.
    "developer": frozenset({P.ORGANIZATION_READ, P.USERS_READ, P.TUNNELS_READ, P.USAGE_READ, P.RATE_LIMITS_READ}),
    # "Can manage billing details; can view usage and cost data"; "view cost, usage and limit values
    # across all workspaces" (workspace_billing in every workspace): spend limits are billing's.
    "billing": frozenset(
        {
            P.ORGANIZATION_READ,
            P.USERS_READ,
            P.TUNNELS_READ,
            P.USAGE_READ,
            P.WORKSPACES_READ,
            P.RATE_LIMITS_READ,
            P.SPEND_LIMITS_READ,
            P.SPEND_LIMITS_WRITE,
        }
    ),
    # "Can perform all actions available to User, Developer, and Billing roles; can manage users".
    "admin": frozenset(Permission),
}

# What a workspace role grants in its own workspace (on top of the organization role's grants).
WORKSPACE_GRANTS: Final[Mapping[str, frozenset[Permission]]] = {
    "workspace_user": frozenset({P.WORKSPACES_READ}),
    # Decided: uses the API and sees the workspace's keys and limits, but creates and manages none.
    "workspace_restricted_developer": frozenset({P.WORKSPACES_READ, P.API_KEYS_READ, P.RATE_LIMITS_READ}),
    # "Create and manage API keys, use the API".
    "workspace_developer": frozenset(
        {P.WORKSPACES_READ, P.MEMBERS_READ, P.API_KEYS_READ, P.API_KEYS_WRITE, P.RATE_LIMITS_READ}
    ),
    # "Full control over workspace settings and members" (not its archiving: see WORKSPACES_ARCHIVE).
    "workspace_admin": frozenset(
        {
            P.WORKSPACES_READ,
            P.WORKSPACES_WRITE,
            P.MEMBERS_READ,
            P.MEMBERS_WRITE,
            P.API_KEYS_READ,
            P.API_KEYS_WRITE,
            P.RATE_LIMITS_READ,
            P.RATE_LIMITS_WRITE,
        }
    ),
    # "View workspace billing information" (inherited from the organization billing role).
    "workspace_billing": frozenset({P.WORKSPACES_READ, P.RATE_LIMITS_READ}),
}

# Permissions some workspace role grants: a route needing one may be open to a user in some workspace.
WORKSPACE_SCOPED: Final = frozenset().union(*WORKSPACE_GRANTS.values())


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: the audit trail's "who" and the policy's subject.

    For ``kind="user"`` the id is the access token's id, ``user_id`` the person and ``org_role`` their
    organization role when the token was looked up (a role change drops the cached look-up)."""

    kind: ActorKind
    id: str
    organization_id: str
    user_id: str | None = None
    org_role: str | None = None


def allows(actor: Actor, permission: Permission, workspace_role: str | None = None) -> bool:
    """Whether ``actor`` holds ``permission`` in its own organization; with ``workspace_role`` (the
    actor's effective role in one workspace, ``domain.roles.effective_workspace_role``), in that
    workspace."""
    if actor.kind in ALL_POWERFUL:
        return True
    if actor.kind != "user" or actor.org_role is None:
        return False
    if permission in ORG_GRANTS.get(actor.org_role, frozenset()):
        return True
    return workspace_role is not None and permission in WORKSPACE_GRANTS.get(workspace_role, frozenset())


def may_use(actor: Actor, permission: Permission) -> bool:
    """Whether a route needing ``permission`` can be open to ``actor`` at all: organization-wide, or
    in some workspace (which the service layer checks once it knows the workspace)."""
    if allows(actor, permission):
        return True
    return actor.kind == "user" and actor.org_role is not None and permission in WORKSPACE_SCOPED
