"""Organization and workspace roles, and how one implies the other (written once, here)."""

from __future__ import annotations

from typing import Final, Literal, get_args

OrgRole = Literal["user", "developer", "billing", "admin", "claude_code_user"]
AssignableOrgRole = Literal["user", "developer", "billing", "claude_code_user"]
WorkspaceRole = Literal[
    "workspace_user",
    "workspace_developer",
    "workspace_restricted_developer",
    "workspace_admin",
    "workspace_billing",
]
AddableWorkspaceRole = Literal[
    "workspace_user", "workspace_developer", "workspace_restricted_developer", "workspace_admin"
]

ORG_ROLES: Final = frozenset(get_args(OrgRole))
ASSIGNABLE_ORG_ROLES: Final = frozenset(get_args(AssignableOrgRole))
WORKSPACE_ROLES: Final = frozenset(get_args(WorkspaceRole))
ADDABLE_WORKSPACE_ROLES: Final = frozenset(get_args(AddableWorkspaceRole))

_WORKSPACE_RANK: Final = {
    "workspace_billing": 0,
    "workspace_user": 1,
    "workspace_restricted_developer": 2,
    "workspace_developer": 3,
    "workspace_admin": 4,
}

# The role every member of the organization has in the default workspace, which has no member list
# of its own in the Console (decided: the organization role is the baseline there).
DEFAULT_WORKSPACE_ROLE: Final = {
    "admin": "workspace_admin",
    "developer": "workspace_developer",
    "billing": "workspace_billing",
    "user": "workspace_user",
    "claude_code_user": "workspace_user",
}


def _higher(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if _WORKSPACE_RANK[a] >= _WORKSPACE_RANK[b] else b


def effective_workspace_role(org_role: str, member_role: str | None, *, is_default: bool = False) -> str | None:
    """The role a user really has in a workspace.

    An organization admin is an admin of every workspace, whatever (or whether) they are listed as a
    member; an organization billing member is at least ``workspace_billing`` in every workspace; in
    the default workspace every member has at least ``DEFAULT_WORKSPACE_ROLE``; otherwise the role of
    their membership, or none (the workspace is not theirs to see).
    """
    if org_role == "admin":
        return "workspace_admin"
    implied = "workspace_billing" if org_role == "billing" else None
    if is_default:
        implied = _higher(implied, DEFAULT_WORKSPACE_ROLE.get(org_role))
    return _higher(member_role if member_role in _WORKSPACE_RANK else None, implied)


def workspace_role_at_least(role: str | None, needed: str) -> bool:
    return role is not None and _WORKSPACE_RANK[role] >= _WORKSPACE_RANK[needed]
