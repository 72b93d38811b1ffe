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


def effective_workspace_role(org_role: str, member_role: str | None) -> str | None:
    """The role a user really has in a workspace.

    An organization admin is an admin of every workspace, whatever (or whether) they are listed as a
    member; everyone else has exactly the role of their membership, or none.
    """
    if org_role == "admin":
        return "workspace_admin"
    return member_role


def workspace_role_at_least(role: str | None, needed: str) -> bool:
    return role is not None and _WORKSPACE_RANK[role] >= _WORKSPACE_RANK[needed]
