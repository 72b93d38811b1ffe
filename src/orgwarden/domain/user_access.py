"""Who may call the data plane with a user's access token: a pure decision, no I/O.

A user access token (``ow-at01-…``) is bound at sign-in to one workspace (``orgwarden login
--workspace``). It works on ``/v1/messages``, ``/v1/messages/count_tokens`` and ``/v1/models`` of that
workspace when the user's role there lets them use the API: ``workspace_user`` or above
(``workspace_user``, ``workspace_restricted_developer``, ``workspace_developer``, ``workspace_admin``;
an organization ``admin`` is ``workspace_admin`` of every workspace). ``workspace_billing`` sees costs
but makes no calls (Anthropic's role describes billing access only), and a user who is not a member
of the workspace has no role there. The organization role alone grants nothing else: ``developer``,
``billing``, ``user`` and ``claude_code_user`` all need a membership, except in the default workspace,
which has no member list of its own on Anthropic: there every member of the organization has the
workspace role of their organization role (``DEFAULT_WORKSPACE_ROLES``) unless a membership says
otherwise (orgwarden's decision).
"""

from __future__ import annotations

from orgwarden.domain.roles import effective_workspace_role, workspace_role_at_least

LOWEST_CALLING_ROLE = "workspace_user"
DEFAULT_WORKSPACE_ROLES = {
    "developer": "workspace_developer",
    "user": "workspace_user",
    "claude_code_user": "workspace_user",
    "billing": "workspace_billing",
}


def member_role_in(org_role: str, member_role: str | None, default_workspace: bool) -> str | None:
    """The membership role a user has in a workspace: their listed one, else in the default workspace
    the one their organization role gives (``admin`` is handled by ``effective_workspace_role``)."""
    if member_role is None and default_workspace:
        return DEFAULT_WORKSPACE_ROLES.get(org_role)
    return member_role


def may_call_api(org_role: str, member_role: str | None) -> bool:
    """Whether a user with ``org_role`` and this membership (``None``: not a member) may call the
    data plane in the workspace."""
    return workspace_role_at_least(effective_workspace_role(org_role, member_role), LOWEST_CALLING_ROLE)


def refusal(org_role: str, member_role: str | None, workspace_id: str | None, archived: bool = False) -> str | None:
    """Why the data plane refuses a user token (a 403 message), or ``None`` when it may call."""
    if workspace_id is None:
        return (
            "this access token is not bound to a workspace, so it cannot call the API;"
            " sign in again with `orgwarden login --workspace <workspace id>`"
        )
    if archived:
        return f"workspace {workspace_id} is archived; sign in to another workspace with `orgwarden login --workspace`"
    if may_call_api(org_role, member_role):
        return None
    role = effective_workspace_role(org_role, member_role)
    if role is None:
        return (
            f"you are not a member of workspace {workspace_id}; ask a workspace admin to add you"
            f" ({LOWEST_CALLING_ROLE} or above) or sign in to another workspace"
        )
    return (
        f"your role in workspace {workspace_id} ({role}) cannot call the API; {LOWEST_CALLING_ROLE} or above is needed"
    )
