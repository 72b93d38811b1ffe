"""Who may call the data plane with a user's access token: a pure decision, no I/O.

A user access token (``ow-at01-…``) is bound at sign-in to one workspace (``orgwarden login
--workspace``). It works on ``/v1/messages``, ``/v1/messages/count_tokens`` and ``/v1/models`` of that
workspace when the user's role there lets them use the API: ``workspace_user`` or above
(``workspace_user``, ``workspace_restricted_developer``, ``workspace_developer``, ``workspace_admin``;
an organization ``admin`` is ``workspace_admin`` of every workspace). ``workspace_billing`` sees costs
but makes no calls (Anthropic's role describes billing access only), and a user who is not a member
of the workspace has no role there. The organization role alone grants nothing else: ``developer``,
``billing``, ``user`` and ``claude_code_user`` all need a membership, except in the default workspace,
which has no member list of its own on Anthropic: there every member of the organization has at
least the workspace role of their organization role (``domain.roles.DEFAULT_WORKSPACE_ROLE``, the
same rule as on the Admin API; orgwarden's decision).
"""

from __future__ import annotations

from orgwarden.domain.roles import effective_workspace_role, workspace_role_at_least

LOWEST_CALLING_ROLE = "workspace_user"


def may_call_api(org_role: str, member_role: str | None, *, is_default: bool = False) -> bool:
    """Whether a user with ``org_role`` and this membership (``None``: not a member) may call the
    data plane in the workspace; the role implied by the organization role (and, in the default
    workspace, its baseline) is ``domain.roles.effective_workspace_role``'s, as on the Admin API."""
    role = effective_workspace_role(org_role, member_role, is_default=is_default)
    return workspace_role_at_least(role, LOWEST_CALLING_ROLE)


def refusal(
    org_role: str,
    member_role: str | None,
    workspace_id: str | None,
    archived: bool = False,
    *,
    is_default: bool = False,
) -> str | None:
    """Why the data plane refuses a user token (a 403 message), or ``None`` when it may call."""
    if workspace_id is None:
        return (
            "this access token is not bound to a workspace, so it cannot call the API;"
            " sign in again with `orgwarden login --workspace <workspace id>`"
        )
    if archived:
        return f"workspace {workspace_id} is archived; sign in to another workspace with `orgwarden login --workspace`"
    if may_call_api(org_role, member_role, is_default=is_default):
        return None
    role = effective_workspace_role(org_role, member_role, is_default=is_default)
    if role is None:
        return (
            f"you are not a member of workspace {workspace_id}; ask a workspace admin to add you"
            f" ({LOWEST_CALLING_ROLE} or above) or sign in to another workspace"
        )
    return (
        f"your role in workspace {workspace_id} ({role}) cannot call the API; {LOWEST_CALLING_ROLE} or above is needed"
    )
