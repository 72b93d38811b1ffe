"""Workspace-scoped authorization, where the workspace is known: the service layer.

The route's guard has already checked that the route can be open to the actor at all
(``domain.policy.may_use``); a use case that touches one workspace asks the same policy function
again, with the actor's effective role there (``domain.roles.effective_workspace_role``), inside its
own unit of work. A workspace the actor may not see answers 404 as if it did not exist; one they see
but may not act in answers 403. Admin keys, the CLI and the system pass without a query.
"""

from __future__ import annotations

from collections.abc import Mapping

from orgwarden.domain import policy
from orgwarden.domain.policy import Actor, Permission
from orgwarden.domain.roles import effective_workspace_role
from orgwarden.errors import NotFound, PermissionDenied
from orgwarden.services.context import Context
from orgwarden.storage.tables import Workspace
from orgwarden.storage.uow import UnitOfWork


def denied(permission: Permission, where: str = "this organization") -> PermissionDenied:
    return PermissionDenied(f"your role does not have the {permission.value} permission in {where}")


def require_org(ctx: Context, permission: Permission) -> None:
    """Organization-wide use of a permission that workspace roles grant only in their workspace
    (the organization's own rate limits): 403 unless the organization role grants it."""
    if not policy.allows(ctx.actor, permission):
        raise denied(permission)


class WorkspaceAccess:
    """What one actor may do in each workspace, for the length of one unit of work."""

    def __init__(self, actor: Actor, member_roles: Mapping[str, str], default_workspace_id: str | None) -> None:
        self.actor = actor
        self._member_roles = member_roles
        self._default_id = default_workspace_id

    @property
    def unrestricted(self) -> bool:
        return self.actor.kind in policy.ALL_POWERFUL

    def role(self, workspace_id: str, *, is_default: bool) -> str | None:
        if self.actor.kind != "user" or self.actor.org_role is None:
            return None
        return effective_workspace_role(
            self.actor.org_role, self._member_roles.get(workspace_id), is_default=is_default
        )

    def allows(self, workspace: Workspace, permission: Permission) -> bool:
        return policy.allows(self.actor, permission, self.role(workspace.id, is_default=workspace.is_default))

    def require(self, workspace: Workspace, permission: Permission) -> None:
        """404 if the actor cannot see ``workspace``, 403 if they see it but lack ``permission``."""
        if self.allows(workspace, permission):
            return
        if not self.allows(workspace, Permission.WORKSPACES_READ):
            raise NotFound(f"workspace {workspace.id!r} not found")
        raise denied(permission, f"workspace {workspace.id}")

    def visible_ids(self, permission: Permission) -> frozenset[str] | None:
        """The workspaces in which the actor holds ``permission``; ``None`` for all of them."""
        if policy.allows(self.actor, permission):
            return None
        candidates = set(self._member_roles)
        if self._default_id is not None:
            candidates.add(self._default_id)
        return frozenset(
            ws
            for ws in candidates
            if policy.allows(self.actor, permission, self.role(ws, is_default=ws == self._default_id))
        )


async def workspace_access(uow: UnitOfWork, ctx: Context) -> WorkspaceAccess:
    """The actor's workspace roles (one query for a user, none for anybody else)."""
    actor = ctx.actor
    if actor.kind != "user" or actor.user_id is None:
        return WorkspaceAccess(actor, {}, None)
    roles = {m.workspace_id: m.role for m in await uow.members.for_user(actor.user_id)}
    default = await uow.workspaces.default(ctx.organization_id)
    return WorkspaceAccess(actor, roles, default.id)
